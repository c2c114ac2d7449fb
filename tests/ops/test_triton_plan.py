"""Launch plans and the binder-free relaunch of the Triton backend.

CPU (CI): how :class:`CompiledLaunch` finds Triton's C launcher and lays out its arguments
(against a recording stand-in for the C function), when it refuses to build, and how the backend
caches plans (what is in the key, what is not cached, what resets them). GPU (marker ``gpu``):
every relaunch is bit-identical to the same kernel launched through Triton's binder, over shapes
that exercise both kernels, split-K, bias dtypes, TMA descriptors reused at recycled addresses,
unaligned pointers, profiler hooks, CUDA-graph capture and a non-current device.

Tolerances: relaunches must be *bit-identical* to the binder launch (the same compiled kernel on
the same inputs is deterministic: no atomics, fixed split-K reduction order); numerics against
the float64 oracle use :func:`inputs.assert_close_to_truth`.
"""

from __future__ import annotations

import pytest
import torch

import hipbmm_inductor as hi
from hipbmm_inductor import envs, tuning

from .inputs import assert_close_to_truth, make_case

triton = pytest.importorskip("triton")
L = pytest.importorskip("hipbmm_inductor.ops.triton_launch")
T = pytest.importorskip("hipbmm_inductor.ops.triton_fp8_gemm")
from hipbmm_inductor.ops import triton_backend as TB  # noqa: E402
from hipbmm_inductor.ops import triton_configs as C  # noqa: E402
from hipbmm_inductor.ops import triton_plan as P  # noqa: E402

has_gpu = torch.cuda.is_available() and not torch.version.hip
gpu = pytest.mark.skipif(not has_gpu, reason="needs an NVIDIA GPU")


# ---------------------------------------------------------------------------------------------
# CPU: the launcher's plumbing
# ---------------------------------------------------------------------------------------------


def test_raw_launcher_found_directly_and_inside_triton_wrapper():
    class Runner:
        launch = len  # a builtin: Triton calls the C function directly when no descriptors

    assert L._raw_launcher(Runner()) is len

    def wrap(launcher):  # the shape of Triton's wrap_handle_tensordesc
        def inner(*args):
            return launcher(*args)
        return inner

    class Wrapped:
        launch = staticmethod(wrap(len))

    assert L._raw_launcher(Wrapped()) is len

    class Unknown:
        launch = staticmethod(lambda *a: None)

    assert L._raw_launcher(Unknown()) is None
    assert L._raw_launcher(object()) is None


def test_create_refuses_what_it_cannot_launch_exactly():
    assert L.CompiledLaunch.create(None, T.ARG_NAMES) is None  # the interpreter returns no kernel

    class Fn:
        arg_names = ["x", "y"]

    class Src:
        fn = Fn()

    class Compiled:
        src = Src()

    assert L.CompiledLaunch.create(Compiled(), T.ARG_NAMES) is None  # another kernel's signature


def test_hooks_idle_reads_both_hook_styles():
    class Chain:
        def __init__(self, calls):
            self.calls = calls

    class Knobs:
        class runtime:
            launch_enter_hook = Chain([])
            launch_exit_hook = None

    assert L._hooks_idle(Knobs)
    Knobs.runtime.launch_enter_hook = Chain([print])
    assert not L._hooks_idle(Knobs)
    Knobs.runtime.launch_enter_hook = print  # an older Triton: a plain callable
    assert not L._hooks_idle(Knobs)


def test_call_layout_matches_tritons_c_launcher():
    """Triton's CudaLauncher calls ``launch(gx, gy, gz, stream, function, cooperative, pdl,
    global_scratch, profile_scratch, packed_metadata, launch_metadata, enter_hook, exit_hook,
    *kernel_args)`` (driver._BASE_ARGS_FORMAT "iiiKKppOOOOOO")."""
    seen = []

    class Knobs:
        class runtime:
            launch_enter_hook = None
            launch_exit_hook = None

    launch = L.CompiledLaunch(lambda *a: seen.append(a), function=1234, packed_metadata=(4, 1, 0), cooperative=False,
                              pdl=True, knobs=Knobs, expand=None, desc_meta=[])
    launch((7, 2, 1), 99, (10, 11, "constexpr"))
    expected = (7, 2, 1, 99, 1234, False, True, None, None, (4, 1, 0), None, None, None, 10, 11, "constexpr")
    assert seen == [expected]
    launch.launch_raw(7, 2, 1, 99, *launch.prefix, 10, 11, "constexpr")  # what the plans call
    assert seen[1] == expected
    assert launch.hook_lists is None and launch.hooks_idle()  # this Knobs has no hook chains
    assert len(L._BASE_ARGS_FORMAT) == 13 and L._BASE_ARGS_FORMAT.startswith("iiiKK")


def test_expand_descriptor_keeps_no_tensor_alive():
    t = torch.zeros(4)

    class Knobs:
        class runtime:
            launch_enter_hook = None
            launch_exit_hook = None

    launch = L.CompiledLaunch(print, 0, (), False, False, Knobs, expand=lambda desc, meta: [desc, 3, meta],
                              desc_meta=[{"swizzle": 128}])
    out = launch.expand_descriptor(0, t)
    assert out == (t.data_ptr(), 3, {"swizzle": 128})
    assert launch.expand_descriptor(5, t)[2] is None  # a descriptor Triton kept no metadata for


def test_alignment_mask_is_what_triton_specialises():
    assert P._mask(16, 20, 32) == 0b101
    assert P._mask(4, 8, 12) == 0
    assert P._mask(0, 4096) == 0b11


# ---------------------------------------------------------------------------------------------
# CPU: plan caching in the backend (kernels replaced by recorders)
# ---------------------------------------------------------------------------------------------


class _Recorder:
    built: list = []

    def __init__(self, config, prepared, device):
        self.config, self.prepared = config, prepared
        _Recorder.built.append(self)
        self.calls = 0

    def __call__(self, A, B, scale_a, scale_b, bias):
        self.calls += 1
        return torch.zeros(A.shape[0], B.shape[1], dtype=torch.bfloat16)


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """A fresh Triton backend whose plans record instead of launching."""
    _Recorder.built = []
    monkeypatch.setattr(P, "PortablePlan", _Recorder)
    monkeypatch.setattr(T, "prepare", lambda config, M, N, K, *a, **k: (config["BLOCK_M"], M, N, K))
    monkeypatch.setattr(TB.TritonBackend, "_hopper_usable", staticmethod(lambda A, B: False))
    tuning.set_cache_dir(str(tmp_path))
    tuning.set_mode("off")
    yield TB.TritonBackend()
    tuning.set_mode(None)
    tuning.set_cache_dir(None)


def _args(M, N=64, K=128, bias=None):
    c = make_case(M, N, K, bias_dtype=bias)
    return c.A, c.B, c.scale_a, c.scale_b, c.bias, torch.bfloat16


def test_plan_built_once_per_key_and_reused(recorded):
    be = recorded
    for _ in range(3):
        be.run(*_args(5))
    assert len(_Recorder.built) == 1 and _Recorder.built[0].calls == 3
    be.run(*_args(6))  # M is in the key exactly (Triton specialises M == 1 and M % 16)
    be.run(*_args(5, bias=torch.bfloat16))  # so is the bias dtype
    be.run(*_args(5, N=128))
    assert len(_Recorder.built) == 4


def test_plans_follow_accumulation_mode_and_tuning_state(recorded):
    be = recorded
    be.run(*_args(5))
    envs.set_override("HIPBMM_TRITON_ACCUMULATION", "fast")
    try:
        be.run(*_args(5))
    finally:
        envs.set_override("HIPBMM_TRITON_ACCUMULATION", None)
    tuning.set_mode("cache")
    be.run(*_args(5))
    assert len(_Recorder.built) == 3
    tuning.reload()  # a new tuner (cache folder or environment changed): every plan is dropped
    be.run(*_args(5))
    assert len(_Recorder.built) == 4
    assert be._plans_tuner is tuning.tuner()


def test_provisional_answers_are_not_cached(recorded, monkeypatch):
    """Online tuning that had to wait (graph capture) hands out the default: the next call asks
    again, so the shape is tuned once that is safe."""
    be = recorded
    answers = iter([(C.make_config(16, 32, 128, 4, 3), False), (C.make_config(16, 64, 128, 4, 3), True)])
    monkeypatch.setattr(tuning, "resolve", lambda *a, **k: next(answers))
    be.run(*_args(5))
    be.run(*_args(5))
    be.run(*_args(5))
    assert [p.config["BLOCK_N"] for p in _Recorder.built] == [32, 64]
    assert _Recorder.built[1].calls == 2


def test_plan_cache_is_bounded(recorded, monkeypatch):
    monkeypatch.setattr(TB, "PLAN_CACHE_SIZE", 3)
    be = recorded
    for m in range(1, 8):
        be.run(*_args(m))
    assert len(be._plans) <= 3


def test_descriptor_cache_is_bounded():
    cache: dict = {}
    for i in range(P.DESCRIPTOR_CACHE_SIZE + 5):
        P._put(cache, i, (i,))
    assert len(cache) <= P.DESCRIPTOR_CACHE_SIZE and cache[P.DESCRIPTOR_CACHE_SIZE + 4] == (P.DESCRIPTOR_CACHE_SIZE + 4,)


# ---------------------------------------------------------------------------------------------
# GPU: relaunches against Triton's own launch
# ---------------------------------------------------------------------------------------------

_SHAPES = [(1, 4096, 4096), (5, 1024, 512), (16, 6144, 4096), (17, 2064, 1024), (64, 128, 28672), (100, 4096, 256),
           (256, 8192, 1024), (1000, 1024, 2048)]


def _fresh_backend():
    be = TB.TritonBackend()
    return be


def _expect_fast(plan) -> bool:
    # Where the runtime's launcher is the known one (Triton 3.4-3.6), relaunches must be used.
    from triton.backends.nvidia import driver as nv

    return getattr(nv, "_BASE_ARGS_FORMAT", None) == L._BASE_ARGS_FORMAT


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("M,N,K", _SHAPES)
@pytest.mark.parametrize("bias", [None, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("mode", ["promoted", "fast"])
def test_gpu_relaunch_bit_identical_to_binder(M, N, K, bias, mode):
    envs.set_override("HIPBMM_TRITON_ACCUMULATION", mode)
    try:
        be = _fresh_backend()
        c = make_case(M, N, K, bias_dtype=bias, device="cuda", seed=M + N + K)
        config, fast = be.config_for(*c.args)
        via_binder = T.launch(config, *c.args, fast_accum=fast)
        first = be.run(*c.args)  # builds the plan, launches through Triton
        (plan,) = be._plans.values()
        again = [be.run(*c.args) for _ in range(3)]  # relaunched
        if _expect_fast(plan):
            assert plan.fast is not None, f"{plan.kernel}: no binder-free launch was built"
        for out in [first, *again]:
            assert torch.equal(out, via_binder), f"M={M} N={N} K={K} bias={bias} {mode} {plan.kernel}"
        assert_close_to_truth(again[-1], c, f"M={M} N={N} K={K}")
    finally:
        envs.set_override("HIPBMM_TRITON_ACCUMULATION", None)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("config", [C.make_config(16, 32, 128, 4, 3, split_k=4), C.make_config(64, 128, 128, 4, 3),
                                    C.make_config(128, 128, 128, 8, 3, a_tma=1)], ids=["splitk4", "plain", "a_tma"])
def test_gpu_portable_plan_relaunch(config, monkeypatch):
    """The portable kernel's plans (split-K with its epilogue, A by TMA), forced by config."""
    be = _fresh_backend()
    monkeypatch.setattr(be, "_resolve", lambda *a, **k: (config, True))
    monkeypatch.setattr(TB.TritonBackend, "_hopper_usable", staticmethod(lambda A, B: False))
    c = make_case(40, 512, 1024, bias_dtype=torch.bfloat16, device="cuda", seed=9)
    ref = T.launch(config, *c.args)
    outs = [be.run(*c.args) for _ in range(3)]
    (plan,) = be._plans.values()
    assert plan.kernel == "portable"
    if _expect_fast(plan):
        assert plan.fast is not None
    assert all(torch.equal(o, ref) for o in outs)


@pytest.mark.gpu
@gpu
def test_gpu_descriptors_reused_at_recycled_addresses_see_new_data():
    """A descriptor is cached per address: a new tensor at a freed tensor's address (the caching
    allocator's usual behaviour) must be read with its own values."""
    be = _fresh_backend()
    cases = [make_case(8, 1024, 1024, bias_dtype=None, device="cuda", seed=s) for s in range(4)]
    base = cases[0]
    A = base.A.clone()
    be.run(A, base.B, base.scale_a, base.scale_b, None, torch.bfloat16)
    for c in cases[1:]:
        A.copy_(c.A)  # same address, new values
        out = be.run(A, base.B, c.scale_a, base.scale_b, None, torch.bfloat16)
        ref = T.launch(be.config_for(A, base.B, c.scale_a, base.scale_b, None, torch.bfloat16)[0],
                       A, base.B, c.scale_a, base.scale_b, None, torch.bfloat16)
        assert torch.equal(out, ref)
    del A
    for c in cases:  # fresh allocations: addresses recycle, contents differ
        A2 = c.A.clone()
        out = be.run(A2, base.B, c.scale_a, base.scale_b, None, torch.bfloat16)
        ref = T.launch(be.config_for(A2, base.B, c.scale_a, base.scale_b, None, torch.bfloat16)[0],
                       A2, base.B, c.scale_a, base.scale_b, None, torch.bfloat16)
        assert torch.equal(out, ref)
        del A2


@pytest.mark.gpu
@gpu
def test_gpu_unaligned_pointer_goes_through_triton():
    """A scale view 4 bytes past an aligned address: Triton specialised the kernel on aligned
    pointers, so the plan must hand this call to Triton's binder (which picks another kernel)."""
    be = _fresh_backend()
    c = make_case(16, 1024, 1024, bias_dtype=torch.bfloat16, device="cuda", seed=5)
    be.run(*c.args)
    buf = torch.empty(17, 1, device="cuda")
    sa = buf[1:]
    sa.copy_(c.scale_a)
    assert sa.data_ptr() % 16 != 0
    outs = [be.run(c.A, c.B, sa, c.scale_b, c.bias, torch.bfloat16) for _ in range(3)]
    (plan,) = be._plans.values()
    ref = be.run(*c.args)
    assert all(torch.equal(o, ref) for o in outs)
    if _expect_fast(plan):  # the second and third calls used a relauncher learnt for this pattern
        assert [m for m, launch in plan._masked.items() if m != "aligned" and launch is not None]
        assert plan.through_triton["no relauncher for this alignment (yet)"] == 2  # first aligned + first unaligned


@pytest.mark.gpu
@gpu
def test_gpu_launch_hooks_still_see_every_launch():
    from triton import knobs

    be = _fresh_backend()
    c = make_case(4, 1024, 1024, bias_dtype=None, device="cuda", seed=6)
    ref = be.run(*c.args)
    be.run(*c.args)
    seen = []
    hook = knobs.runtime.launch_enter_hook
    if not hasattr(hook, "add"):
        pytest.skip("this Triton has no hook chain")
    fn = lambda metadata: seen.append(metadata)  # noqa: E731
    hook.add(fn)
    try:
        out = be.run(*c.args)
    finally:
        hook.remove(fn)
    assert seen, "a launch hook (a profiler) was bypassed"
    assert torch.equal(out, ref)


@pytest.mark.gpu
@gpu
def test_gpu_cuda_graph_capture_and_replay_with_plans():
    """Plans built before and during capture; replays read the inputs' new values."""
    hi.set_backend("triton")
    cases = [make_case(M, 2048, 1024, bias_dtype=torch.bfloat16, device="cuda", seed=M) for M in (1, 16, 48)]
    warm = hi.hipb_mm_fp8(*cases[0].args)  # plan exists before capture for M = 1 only
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=s):
        outs = [hi.hipb_mm_fp8(*c.args) for c in cases]
    fresh = [make_case(c.A.shape[0], 2048, 1024, bias_dtype=torch.bfloat16, device="cuda", seed=100 + i)
             for i, c in enumerate(cases)]
    for c, f in zip(cases, fresh):
        c.A.copy_(f.A)
        c.scale_a.copy_(f.scale_a)
    g.replay()
    torch.cuda.synchronize()
    for o, c in zip(outs, cases):
        assert torch.equal(o, hi.hipb_mm_fp8(*c.args))
    del warm


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu or torch.cuda.device_count() < 2, reason="needs two NVIDIA GPUs")
def test_gpu_inputs_on_a_non_current_device():
    hi.set_backend("triton")
    c = make_case(16, 1024, 1024, bias_dtype=torch.bfloat16, device="cuda:1", seed=8)
    torch.cuda.set_device(0)
    outs = [hi.hipb_mm_fp8(*c.args) for _ in range(3)]
    for o in outs:
        assert o.device == torch.device("cuda:1")
        assert_close_to_truth(o, c, "cuda:1 while cuda:0 is current")


@pytest.mark.gpu
@gpu
def test_gpu_plans_built_under_cudagraph_trees():
    """Plans first built while cudagraph trees warm up and record (mode="reduce-overhead"): a plan
    must keep no tensor in the trees' private pool, which they check after recording."""
    hi.set_backend("triton")
    torch._dynamo.reset()
    c = make_case(24, 2048, 1024, bias_dtype=torch.bfloat16, device="cuda", seed=11)
    f = torch.compile(lambda A, B, sa, sb, bias: hi.hipb_mm_fp8(A, B, sa, sb, bias) * 2, mode="reduce-overhead")
    outs = [f(*c.args[:5]).clone() for _ in range(4)]
    ref = hi.hipb_mm_fp8(*c.args) * 2
    assert all(torch.equal(o, ref) for o in outs)
    torch._dynamo.reset()


@pytest.mark.gpu
@gpu
def test_gpu_device_guard_entered_when_inputs_are_not_on_the_current_device(monkeypatch):
    """One GPU can still show the guard's logic: with the current device reported as another
    index, the backend must enter a guard for the inputs' device (Triton compiles for, and
    launches on the stream of, the current device), and the result stays right."""
    from hipbmm_inductor.ops import triton_backend

    be = _fresh_backend()
    c = make_case(8, 1024, 1024, bias_dtype=None, device="cuda:0", seed=12)
    ref = be.run(*c.args)
    entered = []
    real_guard = torch.cuda.device

    class Recording:
        def __init__(self, device):
            entered.append(torch.device(device))
            self._guard = real_guard(device)

        def __enter__(self):
            return self._guard.__enter__()

        def __exit__(self, *exc):
            return self._guard.__exit__(*exc)

    monkeypatch.setattr(triton_backend, "_cuda_get_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "device", Recording)
    out = be.run(*c.args)
    assert entered == [torch.device("cuda:0")]
    assert out.device == torch.device("cuda:0") and torch.equal(out, ref)
    monkeypatch.setattr(triton_backend, "_cuda_get_device", lambda: 0)
    be.run(*c.args)
    assert len(entered) == 1, "a guard was entered although the inputs are on the current device"


# ---------------------------------------------------------------------------------------------
# CPU: a Hopper plan's relaunch, end to end against a recording launcher
# ---------------------------------------------------------------------------------------------


class _Chain:
    def __init__(self):
        self.calls = []


class _Knobs:
    class runtime:
        launch_enter_hook = _Chain()
        launch_exit_hook = _Chain()


def _recording_launch(seen):
    return L.CompiledLaunch(lambda *a: seen.append(a), function=42, packed_metadata=(4, 1, 0), cooperative=False,
                            pdl=False, knobs=_Knobs, expand=lambda desc, meta: ("desc", desc.base.data_ptr(),
                                                                                *desc.shape, *desc.strides),
                            desc_meta=[{}, {}, {}])


def test_hopper_relaunch_passes_what_the_kernel_signature_says(monkeypatch):
    H = pytest.importorskip("hipbmm_inductor.ops.triton_fp8_hopper")
    monkeypatch.setattr(H, "_sm_count", lambda device: 132)
    monkeypatch.setattr(P, "current_stream", lambda index: 77)
    c = make_case(5, 256, 512, bias_dtype=torch.bfloat16)
    config = C.make_hopper_config(64, 64, 128, 4)
    prepared = H.prepare(config, 5, 256, 512, True, c.A.device)
    plan = P.HopperPlan(config, prepared, torch.device("cpu"))
    seen = []
    plan.fast = _recording_launch(seen)
    out = plan(c.A, c.B, c.scale_a, c.scale_b, c.bias)
    assert out.shape == (5, 256) and out.dtype == torch.bfloat16
    (args,) = seen
    g = prepared.grid
    head = (g[0], g[1], g[2], 77, 42, False, False, None, None, (4, 1, 0), None, None, None)
    assert args[:13] == head
    w_groups = c.B.t().view(256 // 16, 16 * 512)
    expected = (("desc", c.A.data_ptr(), 5, 512, 512, 1), ("desc", w_groups.data_ptr(), 16, 16 * 512, 16 * 512, 1),
                (c.scale_a.data_ptr(), c.scale_b.data_ptr(), c.bias.data_ptr()),
                ("desc", out.data_ptr(), 5, 256, 256, 1), (5, 256, 512, *prepared.constexprs))
    assert args[13:] == tuple(x for part in expected for x in part)
    assert len(H.ARG_NAMES) == 19 and len(prepared.constexprs) == len(H.ARG_NAMES) - 9


def test_a_replaced_hook_chain_is_seen():
    """A profiler may assign the knob instead of adding to its chain: relaunches must notice."""
    launch = _recording_launch([])
    assert launch.hooks_idle()
    original = _Knobs.runtime.launch_enter_hook
    try:
        _Knobs.runtime.launch_enter_hook = print
        assert not launch.hooks_idle()
    finally:
        _Knobs.runtime.launch_enter_hook = original
    original.calls.append(print)
    try:
        assert not launch.hooks_idle()
    finally:
        original.calls.clear()
    assert launch.hooks_idle()


def test_no_binder_free_launch_on_rocm(monkeypatch):
    monkeypatch.setattr(torch.version, "hip", "6.4.0")
    assert L.CompiledLaunch.create(object(), T.ARG_NAMES) is None


def test_create_never_raises():
    class Weird:
        @property
        def src(self):
            raise RuntimeError("a runtime this module does not know")

    assert L.CompiledLaunch.create(Weird(), T.ARG_NAMES) is None


def test_a_refusal_under_a_profiler_is_not_remembered(monkeypatch):
    monkeypatch.setattr(P, "hooks_installed", lambda: True)
    plan = P._Plan.__new__(P._Plan)
    plan.fast, plan._masked = None, {}
    plan._learn(True, 0, object(), T.ARG_NAMES)
    plan._learn(False, 0b101, object(), T.ARG_NAMES)
    assert plan._masked == {} and plan.fast is None  # the next call (hook gone) tries again


def test_portable_split_k_relaunch_passes_both_kernels_their_signatures(monkeypatch):
    monkeypatch.setattr(T, "_arch_for", lambda device: "sm_90")
    monkeypatch.setattr(T, "_has_tma", lambda device: False)
    monkeypatch.setattr(P, "current_stream", lambda index: 5)
    c = make_case(3, 64, 256, bias_dtype=None)
    config = C.make_config(16, 32, 64, 4, 3, split_k=2)
    prepared = T.prepare(config, 3, 64, 256, c.A.dtype, False, c.A.device)
    plan = P.PortablePlan(config, prepared, torch.device("cpu"))
    main_seen, epi_seen = [], []
    plan.fast, plan.fast_epilogue = _recording_launch(main_seen), _recording_launch(epi_seen)
    out = plan(c.A, c.B, c.scale_a, c.scale_b, None)
    (main,), (epi,) = main_seen, epi_seen
    assert main[:4] == (*prepared.grid, 5) and epi[:4] == (*prepared.epilogue_grid, 5)
    kernel_args = main[13:]
    assert len(kernel_args) == len(T.ARG_NAMES)
    a, w, sa, sb, bias, target = kernel_args[:6]
    assert (a, w, sa, sb) == (c.A.data_ptr(), c.B.data_ptr(), c.scale_a.data_ptr(), c.scale_b.data_ptr())
    assert bias == sb  # no bias: the scale stands in, as in Triton's own launch
    assert kernel_args[6:] == (3, 64, 256, *prepared.constexprs)
    assert epi[13:] == (target, sa, sb, sb, out.data_ptr(), 3, 64, False, 2, T._EPILOGUE_BLOCK)
    assert len(epi[13:]) == len(T.EPILOGUE_ARG_NAMES)
    assert target != out.data_ptr()  # split-K partials go to the workspace, not the output
