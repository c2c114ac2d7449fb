"""The aiter backend against a recording stand-in for ``aiter`` (no AMD GPU on CI machines).

The stand-in (:mod:`tests.aiter_standin`) checks every argument against hipb_mm's contract and
answers with the reference math; these tests add the simulated platform (a ROCm build of torch
with an MI300 or MI350 GPU) and check what the backend does around the call: gating reasons, the
fp8 flavour of the GPU, one extension per device, the probe and its fallback, the tuned index.
"""

from __future__ import annotations

import logging
import sys
import threading
import types

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import hipbmm_inductor as hi
from hipbmm_inductor import BackendUnavailableError, HipbmmInputError, envs
from hipbmm_inductor.ops import aiter_backend, registry
from hipbmm_inductor.ops.aiter_backend import AiterBackend
from hipbmm_inductor.ops.registry import Availability
from tests.aiter_standin import AiterStandIn, ContractViolation
from tests.ops.inputs import error_bound, float64_oracle, make_case

ARCHS = ["gfx942", "gfx950"]
FP8 = {"gfx942": torch.float8_e4m3fnuz, "gfx950": torch.float8_e4m3fn}
GPU = torch.device("cuda", 0)


@pytest.fixture
def platform(monkeypatch):
    """Simulate a ROCm build of torch on an MI3xx GPU, with the stand-in as ``aiter``."""

    def install(arch: str = "gfx942", gpu_arch: str | None = None, **standin_kwargs) -> AiterStandIn:
        standin = AiterStandIn(arch=arch, **standin_kwargs)
        monkeypatch.setitem(sys.modules, "aiter", standin)
        monkeypatch.setattr(aiter_backend, "_is_rocm_build", lambda: True)
        monkeypatch.setattr(aiter_backend, "_gpu_arch", lambda device: gpu_arch or arch)
        return standin

    # Outside vLLM unless a test says otherwise (a vLLM test may have imported it in this process).
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    for name in ("HIPBMM_USE_AITER", "VLLM_ROCM_USE_AITER", "VLLM_ROCM_USE_AITER_LINEAR",
                 "VLLM_ROCM_USE_AITER_LINEAR_HIPBMM", "HIPBMM_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    # The tuner's default mode is "cache"; with an empty cache dir it answers the default config.
    envs.set_override("HIPBMM_TUNING", "off")
    yield install
    envs.set_override("HIPBMM_TUNING", None)


def _check_close(out: torch.Tensor, case, extra=0.0) -> None:
    # fp8 inputs are exact; error_bound allows one bf16 ulp (2^-7 relative, since the fp32 value
    # being rounded is itself inexact) plus the fp32 accumulation bound; `extra` adds what the
    # backend itself rounds (an fp32 bias rounded to bf16: 2^-9 of |bias|).
    ref = float64_oracle(case)
    bound = error_bound(case) + extra
    err = (out.double() - ref).abs()
    bad = (err > bound).nonzero()
    assert bad.numel() == 0, (
        f"{bad.shape[0]} elements out of bound; first at {tuple(bad[0].tolist())}: "
        f"got {out[tuple(bad[0])].item()}, want {ref[tuple(bad[0])].item()}"
    )


# --- gating -----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_available_on_mi3xx(platform, arch):
    platform(arch)
    av = AiterBackend().availability(GPU)
    assert av.ok, av.reason
    assert arch in av.reason
    assert AiterBackend().is_fast(GPU)


@pytest.mark.parametrize(
    "setup, device, expected",
    [
        pytest.param(dict(rocm=False), GPU, "not a ROCm build", id="cuda-build"),
        pytest.param(dict(), torch.device("cpu"), "device cpu is not a GPU", id="cpu-device"),
        pytest.param(dict(gpu_arch="gfx90a"), GPU, "gfx90a is not MI300 (gfx942) or MI350 (gfx950)", id="mi250"),
        pytest.param(dict(aiter=None), GPU, "aiter is not importable", id="no-aiter"),
        pytest.param(dict(aiter="old"), GPU, "does not expose hipb_mm", id="aiter-without-hipb_mm"),
        pytest.param(dict(env={"HIPBMM_USE_AITER": "0"}), GPU, "HIPBMM_USE_AITER=0", id="our-switch"),
        pytest.param(dict(vllm=True), GPU, "VLLM_ROCM_USE_AITER=0", id="vllm-default-off"),
        pytest.param(
            dict(vllm=True, env={"VLLM_ROCM_USE_AITER": "1", "VLLM_ROCM_USE_AITER_LINEAR_HIPBMM": "0"}),
            GPU, "VLLM_ROCM_USE_AITER_LINEAR_HIPBMM=0", id="vllm-hipbmm-off",
        ),
    ],
)
def test_unavailable_reasons(platform, monkeypatch, setup, device, expected):
    platform("gfx942", gpu_arch=setup.get("gpu_arch"))
    if setup.get("rocm") is False:
        monkeypatch.setattr(aiter_backend, "_is_rocm_build", lambda: False)
    if "aiter" in setup:
        # None in sys.modules makes `import aiter` raise ImportError; "old" is an aiter without hipb_mm.
        monkeypatch.setitem(sys.modules, "aiter", None if setup["aiter"] is None else types.ModuleType("aiter"))
    for name, value in setup.get("env", {}).items():
        monkeypatch.setenv(name, value)
    if setup.get("vllm"):
        monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    av = AiterBackend().availability(device)
    assert not av.ok
    assert expected in av.reason


def test_every_failed_check_gives_its_reason(platform, monkeypatch):
    platform("gfx942", gpu_arch="gfx1100")
    monkeypatch.setitem(sys.modules, "aiter", None)
    monkeypatch.setenv("HIPBMM_USE_AITER", "0")
    reason = AiterBackend().availability(GPU).reason
    for part in ("gfx1100 is not MI300", "aiter is not importable", "HIPBMM_USE_AITER=0"):
        assert part in reason


def test_under_vllm_its_switches_decide(platform, monkeypatch):
    platform("gfx950")
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setenv("VLLM_ROCM_USE_AITER", "1")
    monkeypatch.setenv("HIPBMM_USE_AITER", "0")  # ignored under vLLM: vLLM's switches decide
    assert AiterBackend().availability(GPU).ok


def test_status_on_this_machine_names_the_reasons():
    # No simulation: this CPU machine has no ROCm torch and no aiter.
    if torch.version.hip:
        pytest.skip("runs on a ROCm build; the simulated tests cover the reasons there")
    av = registry.availability("aiter", torch.device("cpu"))
    assert not av.ok
    assert "not a ROCm build" in av.reason and "not a GPU" in av.reason
    row = next(b for b in hi.status("cpu").backends if b.name == "aiter")
    assert not row.usable and row.reason == av.reason


# --- the call ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("bias_dtype", [None, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("M, N, K", [(1, 16, 32), (17, 48, 96), (111, 64, 64)])
def test_run_calls_hipb_mm_per_contract(platform, arch, bias_dtype, M, N, K):
    standin = platform(arch)
    case = make_case(M, N, K, fp8=FP8[arch], bias_dtype=bias_dtype, seed=M + N + K)
    backend = AiterBackend()
    out = backend.run(*case.args)
    extra = 0.0 if bias_dtype is not torch.float32 else 2.0**-9 * case.bias.double().abs()
    _check_close(out, case, extra)
    assert out.shape == (M, N) and out.dtype == torch.bfloat16 and out.is_contiguous()

    probe, call = standin.calls  # one probe with the heuristic (-1), then the real call
    assert [c.fn for c in standin.calls] == ["hipb_mm", "hipb_mm"]
    assert probe.solution_index == -1 and call.solution_index == -1
    # B reaches hipBLASLt as the very view the caller packed: same storage, same strides.
    assert call.mat2.data_ptr() == case.B.data_ptr() and call.mat2.stride() == (1, K)
    assert call.scaleA is case.scale_a and call.scaleB is case.scale_b
    assert backend.counters["hipb_mm_calls"] == 1 and backend.counters["probes"] == 1


def test_through_the_op(platform, monkeypatch):
    standin = platform("gfx950")
    backend = registry.get_backend("aiter")
    # The op picks its backend by device; CPU tensors stand in for the GPU's here.
    monkeypatch.setattr(backend, "availability", lambda device: Availability(True, "simulated MI350"))
    hi.set_backend("aiter")
    case = make_case(33, 32, 64, fp8=torch.float8_e4m3fn)
    _check_close(hi.hipb_mm_fp8(*case.args), case)
    assert standin.calls and all(c.fn == "hipb_mm" for c in standin.calls)


@given(
    arch=st.sampled_from(ARCHS),
    M=st.integers(1, 70),
    n_tiles=st.integers(1, 4),
    k_tiles=st.integers(1, 4),
    bias=st.sampled_from([None, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_matches_reference_property(arch, M, n_tiles, k_tiles, bias, seed):
    # hypothesis does not combine with function-scoped fixtures: simulate by hand.
    standin = AiterStandIn(arch=arch)
    mp = pytest.MonkeyPatch()
    try:
        mp.setitem(sys.modules, "aiter", standin)
        mp.setattr(aiter_backend, "_gpu_arch", lambda device: arch)
        envs.set_override("HIPBMM_TUNING", "off")
        case = make_case(M, 16 * n_tiles, 32 * k_tiles, fp8=FP8[arch], bias_dtype=bias, seed=seed)
        _check_close(AiterBackend().run(*case.args), case)
    finally:
        envs.set_override("HIPBMM_TUNING", None)
        mp.undo()


@pytest.mark.parametrize("arch, wrong", [("gfx942", torch.float8_e4m3fn), ("gfx950", torch.float8_e4m3fnuz)])
def test_wrong_fp8_flavour_is_a_clear_error(platform, arch, wrong):
    standin = platform(arch)
    case = make_case(8, 32, 64, fp8=wrong)
    with pytest.raises(HipbmmInputError, match=rf"A: .*{arch}.* computes fp8 GEMMs in {FP8[arch]}, got {wrong}"):
        AiterBackend().run(*case.args)
    assert standin.calls == []


def test_stand_in_rejects_a_broken_call(platform):
    # The stand-in must be able to fail: a contiguous copy of B destroys the preshuffled layout.
    standin = platform("gfx942")
    case = make_case(4, 32, 64, fp8=torch.float8_e4m3fnuz)
    standin.hipb_create_extension()
    with pytest.raises(ContractViolation, match="mat2 must be the \\[K, N\\] view"):
        standin.hipb_mm(case.A, case.B.contiguous(), -1, out_dtype=torch.bfloat16,
                        scaleA=case.scale_a, scaleB=case.scale_b, bpreshuffle=True)
    with pytest.raises(ContractViolation, match="bpreshuffle must be True"):
        standin.hipb_mm(case.A, case.B, -1, out_dtype=torch.bfloat16, scaleA=case.scale_a, scaleB=case.scale_b)


# --- once per process and device ------------------------------------------------------------

def test_extension_created_once_across_threads(platform):
    standin = platform("gfx942", create_delay_s=0.05)  # a wide window for a racy double create
    backend = AiterBackend()
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    errors = []

    def worker():
        try:
            for _ in range(3):
                backend.run(*case.args)
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert standin.extension_creations == 1
    assert backend.counters["hipb_mm_calls"] == 18


def test_extension_created_before_first_gemm(platform):
    standin = platform("gfx942")
    # The stand-in raises ContractViolation for a GEMM before hipb_create_extension().
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    with pytest.raises(ContractViolation, match="hipb_create_extension"):
        standin.hipb_mm(case.A, case.B, -1, out_dtype=torch.bfloat16, scaleA=case.scale_a,
                        scaleB=case.scale_b, bpreshuffle=True)
    AiterBackend().run(*case.args)
    assert standin.extension_creations == 1


# --- no preshuffled solution (gfx950 with some hipBLASLt releases) ---------------------------

def test_no_solution_falls_back_once_and_logs_once(platform, caplog):
    standin = platform("gfx950", no_solution=lambda M, N, K: True)
    backend = AiterBackend()
    case = make_case(16, 32, 64, fp8=torch.float8_e4m3fn)
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        outs = [backend.run(*case.args) for _ in range(3)]
    for out in outs:
        _check_close(out, case)
    assert [c.solution_index for c in standin.calls] == [-1]  # probed once, then never asked again
    assert backend.counters["probes"] == 1
    assert backend.counters["fallback_calls"] == 3
    assert backend.counters["hipb_mm_calls"] == 0
    warnings = [r for r in caplog.records if "no preshuffled fp8 solution" in r.getMessage()]
    assert len(warnings) == 1 and "N=32, K=64" in warnings[0].getMessage()


def test_no_solution_is_per_shape_class(platform):
    standin = platform("gfx950", no_solution=lambda M, N, K: N == 48)
    backend = AiterBackend()
    good = make_case(8, 32, 64, fp8=torch.float8_e4m3fn)
    bad = make_case(8, 48, 64, fp8=torch.float8_e4m3fn)
    for _ in range(2):
        _check_close(backend.run(*good.args), good)
        _check_close(backend.run(*bad.args), bad)
    assert backend.counters["probes"] == 2
    assert backend.counters["hipb_mm_calls"] == 2 and backend.counters["fallback_calls"] == 2
    # N=48 was asked once (its probe); N=32 had a probe and two real calls.
    assert [c.N for c in standin.calls].count(48) == 1 and [c.N for c in standin.calls].count(32) == 3


def test_no_solution_at_a_later_M_falls_back(platform):
    # hipBLASLt's heuristic sees M (its n): a class probed fine at one M may have none at another.
    platform("gfx950", no_solution=lambda M, N, K: M > 64)
    backend = AiterBackend()
    small = make_case(8, 32, 64, fp8=torch.float8_e4m3fn)
    large = make_case(100, 32, 64, fp8=torch.float8_e4m3fn)
    _check_close(backend.run(*small.args), small)
    _check_close(backend.run(*large.args), large)
    assert backend.counters["hipb_mm_calls"] == 1 and backend.counters["fallback_calls"] == 1
    assert backend.counters["shape_classes_without_solution"] == 1


def test_no_solution_fallback_follows_the_auto_order(platform, monkeypatch):
    platform("gfx950", no_solution=lambda M, N, K: True)
    used = []

    class Recorder:
        name = "recorder"

        def availability(self, device):
            return Availability(True, "test")

        def is_fast(self, device):
            return False

        def run(self, *args):
            used.append(self.name)
            return registry.get_backend("reference").run(*args)

    monkeypatch.setitem(registry._backends, "recorder", Recorder())
    monkeypatch.setattr(registry, "auto_order", lambda device: ["aiter", "recorder", "reference"])
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fn)
    _check_close(AiterBackend().run(*case.args), case)
    assert used == ["recorder"]


def test_no_solution_with_aiter_named_explicitly_raises(platform, monkeypatch):
    platform("gfx950", no_solution=lambda M, N, K: True)
    monkeypatch.setenv("HIPBMM_BACKEND", "aiter")
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fn)
    with pytest.raises(BackendUnavailableError, match=r"HIPBMM_BACKEND=aiter: hipBLASLt has no preshuffled fp8 solution for N=32, K=64"):
        AiterBackend().run(*case.args)


def test_other_hipblaslt_errors_propagate(platform, monkeypatch):
    standin = platform("gfx942")
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)

    def broken(*args, **kwargs):
        raise RuntimeError("hipblaslt error: HIPBLAS_STATUS_INTERNAL_ERROR")

    monkeypatch.setattr(standin, "hipb_mm", broken)
    backend = AiterBackend()
    with pytest.raises(RuntimeError, match="INTERNAL_ERROR"):
        backend.run(*case.args)
    assert backend.counters["fallback_calls"] == 0


# --- the solution index comes from the tuner --------------------------------------------------

def test_tuned_solution_index_is_used(platform, monkeypatch):
    standin = platform("gfx942", solutions=(3, 7, 11))
    seen = {}

    def choose(backend, A, B, scale_a, scale_b, bias, out_dtype, *, default, candidates, run, extra_key=""):
        seen["backend"], seen["default"] = backend, default
        seen["candidates"] = candidates()
        # The tuner times candidates through `run`: it must compute the op for any listed index.
        seen["run_out"] = run(seen["candidates"][1], A, B, scale_a, scale_b, bias, out_dtype)
        return {"solution_index": 7}

    monkeypatch.setattr(aiter_backend.tuning, "choose", choose)
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    out = AiterBackend().run(*case.args)
    _check_close(out, case)
    _check_close(seen["run_out"], case)
    assert seen["backend"] == "aiter" and seen["default"] == {"solution_index": -1}
    assert seen["candidates"] == [{"solution_index": s} for s in (3, 7, 11)]
    assert standin.calls[-1].fn == "hipb_mm" and standin.calls[-1].solution_index == 7
    assert any(c.fn == "hipb_findallsols" for c in standin.calls)


@pytest.mark.parametrize("bad", [7.0, "7", True, None])
def test_corrupt_solution_index_is_rejected(platform, monkeypatch, bad):
    platform("gfx942")
    monkeypatch.setattr(aiter_backend.tuning, "choose", lambda *a, **k: {"solution_index": bad})
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    with pytest.raises(TypeError, match="solution_index must be an int"):
        AiterBackend().run(*case.args)


def test_online_tuning_picks_a_listed_solution(platform, tmp_path):
    if not hasattr(aiter_backend.tuning, "set_mode"):
        pytest.fail("hipbmm_inductor.tuning has no set_mode(): the tuner's interface changed")
    standin = platform("gfx942", solutions=(3, 7, 11))
    envs.set_override("HIPBMM_TUNING_CACHE", str(tmp_path))
    envs.set_override("HIPBMM_TUNING", "online")
    try:
        case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
        backend = AiterBackend()
        _check_close(backend.run(*case.args), case)
        chosen = standin.calls[-1].solution_index
        assert chosen in (-1, 3, 7, 11)
        n_before = len(standin.calls)
        _check_close(backend.run(*case.args), case)
        # A hit: no new search, one GEMM with the same index.
        assert [(c.fn, c.solution_index) for c in standin.calls[n_before:]] == [("hipb_mm", chosen)]
    finally:
        envs.set_override("HIPBMM_TUNING_CACHE", None)
