"""Launch plans on an NVIDIA GPU: every relaunch is bit-identical to the same kernel launched
through Triton's binder, over shapes that exercise both kernels, split-K and bias dtypes; TMA
descriptors reused at recycled addresses; unaligned pointers; profiler hooks; CUDA-graph capture
and cudagraph trees; the device guard (current device mocked; two real GPUs: ``tests/test_multi_gpu.py``).

Tolerances: relaunches must be *bit-identical* to the binder launch (the same compiled kernel on
the same inputs is deterministic: no atomics, fixed split-K reduction order); numerics against
the float64 oracle use :func:`inputs.assert_close_to_truth`.
"""

from __future__ import annotations

import pytest
import torch

import hipbmm_inductor as hi
from hipbmm_inductor import envs

from tests.support.inputs import assert_close_to_truth, make_case

triton = pytest.importorskip("triton")
L = pytest.importorskip("hipbmm_inductor.ops.triton_launch")
T = pytest.importorskip("hipbmm_inductor.ops.triton_fp8_gemm")
from hipbmm_inductor.ops import triton_backend as TB  # noqa: E402
from hipbmm_inductor.ops import triton_configs as C  # noqa: E402


has_gpu = torch.cuda.is_available() and not torch.version.hip
gpu = pytest.mark.skipif(not has_gpu, reason="needs an NVIDIA GPU")


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
    monkeypatch.setattr(TB.TritonBackend, "_hopper_usable", staticmethod(lambda A, B: False))
    c = make_case(40, 512, 1024, bias_dtype=torch.bfloat16, device="cuda", seed=9)
    _forced_plan_matches_binder(config, c, "portable", 3, monkeypatch)


def _forced_plan_matches_binder(config, c, kernel, calls, monkeypatch):
    """A plan built for ``config`` (the tuner bypassed) answers ``calls`` calls, first through Triton's
    binder, then relaunched, each bit-identical to a plain ``launch`` of the config; returns the last."""
    be = _fresh_backend()
    monkeypatch.setattr(be, "_resolve", lambda *a, **k: (config, True))
    ref = T.launch(config, *c.args)
    outs = [be.run(*c.args) for _ in range(calls)]
    (plan,) = be._plans.values()
    assert plan.kernel == kernel
    if _expect_fast(plan):
        assert plan.fast is not None
    assert all(torch.equal(o, ref) for o in outs)
    return outs[-1]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("bn,bk", [(96, 256), (160, 128), (48, 256)])
@pytest.mark.parametrize("M", [3, 200])
def test_gpu_hopper_two_part_plan_relaunch(bn, bk, M, monkeypatch):
    """A two-part tile (its own weight and output descriptors for the second part) relaunched
    from a plan: bit-identical to the binder's launch, across recycled output addresses."""
    if not T.hopper_path(torch.device("cuda"), torch.float8_e4m3fn):
        pytest.skip("needs sm_90")
    config = C.make_hopper_config(128 if M > 64 else 64, bn, bk, 3)
    c = make_case(M, 1040, 1024, bias_dtype=torch.bfloat16, device="cuda", seed=bn + M)  # 1040: ragged last tile
    out = _forced_plan_matches_binder(config, c, "gluon-sm90", 4, monkeypatch)
    assert_close_to_truth(out, c, f"{config} M={M}")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kernel", ["gluon", "portable"])
@pytest.mark.parametrize("a_offset", [0, 1])
def test_gpu_out_buffer_gets_the_same_bits(kernel, a_offset, monkeypatch):
    """``run(..., out=buf)``, as compiled graphs call it: the plan writes into ``buf`` (and a
    16-byte-misaligned A, which neither TMA path can address, is copied there) with exactly the
    bits of a fresh-output call. ``buf`` starts as NaN so that an unwritten element shows."""
    be = _fresh_backend()
    if kernel == "portable":
        monkeypatch.setattr(TB.TritonBackend, "_hopper_usable", staticmethod(lambda A, B: False))
    c = make_case(24, 2048, 1024, bias_dtype=torch.bfloat16, device="cuda", seed=13)
    A = c.A
    if a_offset:  # A one row of 1024 fp8 past an aligned base is aligned; 1 byte past is not
        flat = torch.empty(A.numel() + 16, dtype=A.dtype, device="cuda")
        A = flat[a_offset:a_offset + A.numel()].view(A.shape)
        A.copy_(c.A)
        assert A.data_ptr() % 16
    args = (A, c.B, c.scale_a, c.scale_b, c.bias, torch.bfloat16)
    ref = be.run(*args)
    for _ in range(3):  # first call, then relaunches
        buf = torch.full_like(ref, float("nan"))
        assert be.run(*args, out=buf) is buf
        assert torch.equal(buf, ref)
    assert_close_to_truth(ref, c, f"{kernel} a_offset={a_offset}")


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
