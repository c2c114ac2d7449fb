"""Launch plans of the Triton backend, on the CPU: what the plan cache keys on, what it does not
cache, what resets it, and the exact C-launcher arguments both plans (the sm_90 kernel's and the
portable kernel's, split-K included) pass, against a recording launcher. GPU relaunches against
Triton's own launch: ``test_triton_plan_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

from hipbmm_inductor import envs, hardware, tuning

from tests.support.inputs import make_case

triton = pytest.importorskip("triton")
L = pytest.importorskip("hipbmm_inductor.ops.triton_launch")
T = pytest.importorskip("hipbmm_inductor.ops.triton_fp8_gemm")
from hipbmm_inductor.ops import triton_backend as TB  # noqa: E402
from hipbmm_inductor.ops import triton_configs as C  # noqa: E402
from hipbmm_inductor.ops import triton_plan as P  # noqa: E402
from tests.support.launch_fakes import recording_launch  # noqa: E402


# ---------------------------------------------------------------------------------------------
# CPU: plan caching in the backend (kernels replaced by recorders)
# ---------------------------------------------------------------------------------------------


class _Recorder:
    built: list = []

    def __init__(self, config, prepared, device):
        self.config, self.prepared = config, prepared
        _Recorder.built.append(self)
        self.calls = 0
        self.out_checked = False

    def __call__(self, A, B, scale_a, scale_b, bias, out=None):
        self.calls += 1
        self.out = out
        result = torch.zeros(A.shape[0], B.shape[1], dtype=torch.bfloat16)
        return result if out is None else out.copy_(result)


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


def test_a_given_output_reaches_the_plan_on_first_and_later_calls(recorded):
    # Compiled graphs pass Inductor's buffer (ops/hipb_mm_fp8.py, hipb_mm_fp8_out): the first call
    # (which builds the plan) and every later one write there and return it.
    be = recorded
    for i in range(2):
        out = torch.full((5, 64), float("nan"), dtype=torch.bfloat16)
        assert be.run(*_args(5), out=out) is out
        assert not out.isnan().any()
        assert _Recorder.built[0].out is out and _Recorder.built[0].calls == i + 1


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


def test_an_out_is_checked_on_a_plan_an_eager_call_built(recorded):
    """The compiled-graph entry's buffer is checked the first time a plan meets one, also when an
    eager call (no `out`) built the plan: a wrong buffer is refused, never written as [M, N] bf16."""
    from hipbmm_inductor import HipbmmInputError

    be = recorded
    A, B, sa, sb, bias, dt = _args(5)
    be.run(A, B, sa, sb, bias, dt)  # builds the plan, no out
    with pytest.raises(HipbmmInputError, match="^out: "):
        be.run(A, B, sa, sb, bias, dt, torch.empty(5, 32, dtype=torch.bfloat16))  # [M, N / 2]
    with pytest.raises(HipbmmInputError, match="^out: "):
        be.run(A, B, sa, sb, bias, dt, torch.empty(5, 64, dtype=torch.float32))
    good = torch.empty(5, 64, dtype=torch.bfloat16)
    assert be.run(A, B, sa, sb, bias, dt, good) is good and _Recorder.built[0].out is good


def test_plan_cache_is_bounded(recorded, monkeypatch):
    monkeypatch.setattr(TB, "PLAN_CACHE_SIZE", 3)
    be = recorded
    for m in range(1, 8):
        be.run(*_args(m))
    # The oldest plans go first: the three shapes used last stay (no rebuild of the working set).
    assert sorted(key[4] for key in be._plans) == [5, 6, 7]
    built = len(_Recorder.built)
    be.run(*_args(7))
    assert len(_Recorder.built) == built


def test_alignment_mask_is_what_triton_specialises():
    assert P._mask(16, 20, 32) == 0b101
    assert P._mask(4, 8, 12) == 0
    assert P._mask(0, 4096) == 0b11


def test_descriptor_cache_is_bounded():
    cache: dict = {}
    for i in range(P.DESCRIPTOR_CACHE_SIZE + 5):
        P._put(cache, i, (i,))
    # Full, the oldest entries were dropped one by one: the newest DESCRIPTOR_CACHE_SIZE remain.
    assert list(cache) == list(range(5, P.DESCRIPTOR_CACHE_SIZE + 5))
    assert cache[P.DESCRIPTOR_CACHE_SIZE + 4] == (P.DESCRIPTOR_CACHE_SIZE + 4,)


# ---------------------------------------------------------------------------------------------
# CPU: a Hopper plan's relaunch, end to end against a recording launcher
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bn", [64, 96])
def test_hopper_relaunch_passes_what_the_kernel_signature_says(monkeypatch, bn):
    """Every argument in the kernel's order: a one-part tile (64 columns) passes its weight and
    output descriptors twice; a two-part tile (96 = 64 + 32) passes each part's own boxes."""
    H = pytest.importorskip("hipbmm_inductor.ops.triton_fp8_hopper")
    monkeypatch.setattr(hardware, "sm_count", lambda device: 132)  # an H100 SXM; the case runs on the CPU
    monkeypatch.setattr(P, "current_stream", lambda index: 77)
    c = make_case(5, 256, 512, bias_dtype=torch.bfloat16)
    config = C.make_hopper_config(64, bn, 128, 4)
    prepared = H.prepare(config, 5, 256, 512, True, c.A.device)
    plan = P.HopperPlan(config, prepared, torch.device("cpu"))
    seen = []
    plan.fast = recording_launch(seen)
    expand, encoded = plan.fast._expand, []
    plan.fast._expand = lambda desc, meta: encoded.append(desc) or expand(desc, meta)
    out = plan(c.A, c.B, c.scale_a, c.scale_b, c.bias)
    plan(c.A, c.B, c.scale_a, c.scale_b, c.bias, out=out)  # the same addresses: nothing encoded again
    assert out.shape == (5, 256) and out.dtype == torch.bfloat16
    # A, then the weight and the output once per part: a one-part tile's repeat is not re-encoded.
    assert len(encoded) == (3 if bn == 64 else 5)
    args = seen[0]
    assert seen[1] == args
    g = prepared.grid
    head = (g[0], g[1], g[2], 77, 42, False, False, None, None, (4, 1, 0), None, None, None)
    assert args[:13] == head
    first, second = (64, 64) if bn == 64 else (64, 32)
    # The weight as [K / 16, N / 16, 256] blocks of 16 rows x 16 K (K block outermost).
    w = ("desc", c.B.data_ptr(), 512 // 16, 256 // 16, 256, 256, 16 * 512, 1)
    o = ("desc", out.data_ptr(), 5, 256, 256, 1)
    # A in 8-row boxes up to M = 5; weight boxes of BLOCK_K / 16 blocks x (columns / 16) groups.
    expected = (("desc", c.A.data_ptr(), 5, 512, 512, 1, 8, 128), w + (128 // 16, first // 16, 256),
                w + (128 // 16, second // 16, 256), (c.scale_a.data_ptr(), c.scale_b.data_ptr(), c.bias.data_ptr()),
                o + (8, first), o + (8, second), (5, 256, 512, *prepared.constexprs))
    assert args[13:] == tuple(x for part in expected for x in part)
    assert len(H.ARG_NAMES) == 22 and len(prepared.constexprs) == len(H.ARG_NAMES) - 11
    assert dict(zip(H.ARG_NAMES[11:], prepared.constexprs))["N_TAIL"] == (0 if bn == 64 else 32)


def test_hopper_plan_keeps_every_layers_weight_descriptor(monkeypatch):
    """One plan serves all layers of one weight shape, visited in turn every step: more weights
    than the activation/output cache holds are each encoded once, not once per call."""
    H = pytest.importorskip("hipbmm_inductor.ops.triton_fp8_hopper")
    monkeypatch.setattr(hardware, "sm_count", lambda device: 132)
    monkeypatch.setattr(P, "current_stream", lambda index: 0)
    c = make_case(5, 256, 512, bias_dtype=None)
    config = C.make_hopper_config(64, 64, 128, 4)
    plan = P.HopperPlan(config, H.prepare(config, 5, 256, 512, False, c.A.device), torch.device("cpu"))
    plan.fast = recording_launch([])
    expand, encoded = plan.fast._expand, []
    plan.fast._expand = lambda desc, meta: encoded.append(desc.base.data_ptr()) or expand(desc, meta)
    layers = [c.B.clone() for _ in range(P.DESCRIPTOR_CACHE_SIZE + 16)]
    for _step in range(3):
        for B in layers:
            plan(c.A, B, c.scale_a, c.scale_b, None)
    weights = {B.t().data_ptr() for B in layers}
    assert sum(1 for p in encoded if p in weights) == len(layers)  # once per layer, over three steps


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
    plan.fast, plan.fast_epilogue = recording_launch(main_seen), recording_launch(epi_seen)
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
