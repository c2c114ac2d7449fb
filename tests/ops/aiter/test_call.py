"""The aiter backend's gating (when it is usable, and why not) and the call itself: hipb_mm's contract, the op end to end, the numerics, the fp8 flavour.

Against the recording stand-in for ``aiter`` (:mod:`tests.support.aiter_standin`); see conftest.py.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import hipbmm_inductor as hi
from hipbmm_inductor import HipbmmInputError, tuning
from hipbmm_inductor.ops import aiter_backend, registry
from hipbmm_inductor.ops.aiter_backend import AiterBackend
from hipbmm_inductor.ops.registry import Availability
from tests.support.aiter_shared import ARCHS, FP8, GPU, check_close
from tests.support.aiter_standin import AiterStandIn
from tests.support.inputs import make_case


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
    extra = 0.0 if bias_dtype is not torch.float32 else 2.0**-9 * case.bias.double().abs()
    for _ in range(2):
        out = backend.run(*case.args)
        check_close(out, case, extra)
        assert out.shape == (M, N) and out.dtype == torch.bfloat16 and out.is_contiguous()

    # The first call's probe (the heuristic, -1) is that call's GEMM; the second call is one GEMM.
    first, second = standin.calls
    assert [c.fn for c in standin.calls] == ["hipb_mm", "hipb_mm"]
    assert first.solution_index == -1 and second.solution_index == -1
    # B reaches hipBLASLt as the very view the caller packed: same storage, same strides.
    assert second.mat2.data_ptr() == case.B.data_ptr() and second.mat2.stride() == (1, K)
    assert second.scaleA is case.scale_a and second.scaleB is case.scale_b
    assert backend.counters["hipb_mm_calls"] == 2 and backend.counters["probes"] == 1
    assert standin.exited is None


def test_through_the_op(platform, monkeypatch):
    standin = platform("gfx950")
    backend = registry.get_backend("aiter")
    # The op picks its backend by device; CPU tensors stand in for the GPU's here.
    monkeypatch.setattr(backend, "availability", lambda device: Availability(True, "simulated MI350"))
    hi.set_backend("aiter")
    case = make_case(33, 32, 64, fp8=torch.float8_e4m3fn)
    check_close(hi.hipb_mm_fp8(*case.args), case)
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
        mp.delenv("HIP_ONLINE_TUNING", raising=False)
        tuning.set_mode("off")
        case = make_case(M, 16 * n_tiles, 32 * k_tiles, fp8=FP8[arch], bias_dtype=bias, seed=seed)
        check_close(AiterBackend().run(*case.args), case)
    finally:
        tuning.set_mode(None)
        mp.undo()


@pytest.mark.parametrize("arch, wrong", [("gfx942", torch.float8_e4m3fn), ("gfx950", torch.float8_e4m3fnuz)])
def test_wrong_fp8_flavour_is_a_clear_error(platform, arch, wrong):
    standin = platform(arch)
    case = make_case(8, 32, 64, fp8=wrong)
    backend = AiterBackend()
    for _ in range(2):  # no plan is kept for a call that was refused
        with pytest.raises(HipbmmInputError, match=rf"A: .*{arch}.* computes fp8 GEMMs in {FP8[arch]}, got {wrong}"):
            backend.run(*case.args)
    assert standin.calls == []
