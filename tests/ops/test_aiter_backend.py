"""The aiter backend against a recording stand-in for ``aiter`` (no AMD GPU on CI machines).

The stand-in (:mod:`tests.aiter_standin`) checks every argument against hipb_mm's contract,
models what aiter does around it (an exit on an index hipBLASLt cannot run, a new handle and
workspace per ``hipb_create_extension()``, ``HIP_ONLINE_TUNING`` replacing the caller's index for
M <= 512) and answers with the reference math; these tests add the simulated platform (a ROCm
build of torch with an MI300 or MI350 GPU) and check what the backend does around the call:
gating reasons, the fp8 flavour of the GPU, one extension per process, the probe and its
fallback, where solution indices come from, who wins under aiter's online tuning, and the launch
plans that keep the per-call path short.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import threading
import types
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import hipbmm_inductor as hi
from hipbmm_inductor import BackendUnavailableError, HipbmmInputError, envs, tuning
from hipbmm_inductor.ops import aiter_backend, registry
from hipbmm_inductor.ops.aiter_backend import AiterBackend
from hipbmm_inductor.ops.registry import Availability
from hipbmm_inductor.tuning import vendor
from tests.aiter_standin import WORKSPACE_BYTES, AiterStandIn, ContractViolation
from tests.ops.inputs import error_bound, float64_oracle, make_case

ARCHS = ["gfx942", "gfx950"]
FP8 = {"gfx942": torch.float8_e4m3fnuz, "gfx950": torch.float8_e4m3fn}
GPU = torch.device("cuda", 0)
ROOT = Path(__file__).resolve().parents[2]
HIPBLASLT = "1.0.60300+standin"  # what the simulated platform reports as hipBLASLt's version


@pytest.fixture
def platform(monkeypatch):
    """Simulate a ROCm build of torch on an MI3xx GPU, with the stand-in as ``aiter``."""

    def install(arch: str = "gfx942", gpu_arch: str | None = None, **standin_kwargs) -> AiterStandIn:
        standin = AiterStandIn(arch=arch, **standin_kwargs)
        monkeypatch.setitem(sys.modules, "aiter", standin)
        monkeypatch.setattr(aiter_backend, "_is_rocm_build", lambda: True)
        monkeypatch.setattr(aiter_backend, "_gpu_arch", lambda device: gpu_arch or arch)
        monkeypatch.setattr(aiter_backend, "_hipblaslt_version", lambda: HIPBLASLT)
        aiter_backend.invalidate_plans()  # the registered backend's plans called an earlier stand-in
        return standin

    # Outside vLLM unless a test says otherwise (a vLLM test may have imported it in this process).
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    for name in ("HIPBMM_USE_AITER", "VLLM_ROCM_USE_AITER", "VLLM_ROCM_USE_AITER_LINEAR",
                 "VLLM_ROCM_USE_AITER_LINEAR_HIPBMM", "HIPBMM_BACKEND", "HIP_ONLINE_TUNING",
                 "HIPBMM_HIP_ONLINE_TUNING"):
        # setenv first: monkeypatch restores only what it recorded, and the backend itself may
        # write HIP_ONLINE_TUNING (forwarding HIPBMM_HIP_ONLINE_TUNING).
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)
    # Off unless a test says otherwise: with the default "cache" mode the answer would depend on
    # whatever the user's cache folder holds.
    tuning.set_mode("off")
    yield install
    tuning.set_mode(None)
    envs.set_override("HIPBMM_HIP_ONLINE_TUNING", None)
    aiter_backend.invalidate_plans()


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


class ChooseSpy:
    """Stands in for ``tuning.choose``: answers ``answer`` and counts the calls."""

    def __init__(self, answer: dict):
        self.answer = answer
        self.calls = 0

    def __call__(self, backend, A, B, scale_a, scale_b, bias, out_dtype, *, default, candidates, run, extra_key=""):
        self.calls += 1
        return self.answer


def _direct(standin, case, index):
    """Call the stand-in as the backend would, with ``index``."""
    return standin.hipb_mm(case.A, case.B, index, bias=case.bias, out_dtype=torch.bfloat16,
                           scaleA=case.scale_a, scaleB=case.scale_b, scaleOut=None, bpreshuffle=True)


def _gemms(standin):
    return [c for c in standin.calls if c.fn == "hipb_mm"]


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
        _check_close(out, case, extra)
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
        mp.delenv("HIP_ONLINE_TUNING", raising=False)
        tuning.set_mode("off")
        case = make_case(M, 16 * n_tiles, 32 * k_tiles, fp8=FP8[arch], bias_dtype=bias, seed=seed)
        _check_close(AiterBackend().run(*case.args), case)
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


# --- the stand-in models aiter faithfully (else the tests below prove nothing) -----------------

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


def test_stand_in_exits_on_an_unknown_index_and_stays_dead(platform):
    standin = platform("gfx942", solutions=(3, 7))
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    standin.hipb_create_extension()
    _check_close(_direct(standin, case, 7), case)  # a listed index runs
    with pytest.raises(SystemExit):
        _direct(standin, case, 5)
    # A caller that swallowed the exit gets nothing more out of the "process".
    with pytest.raises(ContractViolation, match="exited at an earlier call"):
        _direct(standin, case, -1)


def test_stand_in_solutions_can_depend_on_m(platform):
    standin = platform("gfx942", solutions=lambda M, N, K: (3, 7) if M <= 16 else (3,))
    standin.hipb_create_extension()
    _direct(standin, make_case(16, 32, 64, fp8=torch.float8_e4m3fnuz), 7)
    with pytest.raises(SystemExit):
        _direct(standin, make_case(17, 32, 64, fp8=torch.float8_e4m3fnuz), 7)


def test_stand_in_recreates_the_extension_on_every_call(platform):
    standin = platform("gfx942")
    for _ in range(3):
        standin.hipb_create_extension()
    assert standin.extension_creations == 3
    assert [e.handle for e in standin.extensions] == [1, 2, 3]
    assert standin.workspace_bytes == 3 * WORKSPACE_BYTES == 3 * 256 * 2**20


@pytest.mark.parametrize("value, on", [("1", True), ("true", True), ("TRUE", False), ("yes", False), ("0", False)])
def test_stand_in_online_tuning_replaces_the_index_up_to_512(platform, monkeypatch, value, on):
    # aiter: strcmp(getenv("HIP_ONLINE_TUNING"), "1" / "true"), then for n (our M) <= 512 the
    # caller's index is replaced by the CSV's, or tuned inline when the CSV has none.
    standin = platform("gfx942", solutions=(3, 7, 11))
    standin.hipb_create_extension()
    monkeypatch.setenv("HIP_ONLINE_TUNING", value)
    small, large = make_case(512, 16, 32, fp8=torch.float8_e4m3fnuz), make_case(513, 16, 32, fp8=torch.float8_e4m3fnuz)
    _direct(standin, small, 3)
    _direct(standin, large, 3)
    used_small, used_large = (c.used_index for c in _gemms(standin))
    assert used_large == 3  # above 512 the caller's index always runs
    if on:
        assert used_small == 11 and standin.online_tunings == [(512, 16, 32)]  # tuned inline, 3 discarded
        _direct(standin, small, 7)
        assert _gemms(standin)[-1].used_index == 11  # from its CSV now, 7 discarded
    else:
        assert used_small == 3 and standin.online_tunings == []


def test_stand_in_online_tuning_off_without_free_memory(platform, monkeypatch):
    standin = platform("gfx942", free_bytes=128 * 2**20)  # aiter tunes only with more than 128 MiB free
    standin.hipb_create_extension()
    monkeypatch.setenv("HIP_ONLINE_TUNING", "1")
    _direct(standin, make_case(8, 16, 32, fp8=torch.float8_e4m3fnuz), 7)
    assert _gemms(standin)[0].used_index == 7


# --- once per process ------------------------------------------------------------------------

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


def test_extension_created_once_per_process(platform):
    # Every backend instance, shape and M bucket shares aiter's one process-global extension:
    # each extra hipb_create_extension() would leak another handle and 256 MiB workspace.
    standin = platform("gfx942")
    for backend in (AiterBackend(), AiterBackend(), registry.get_backend("aiter")):
        for M, N in ((1, 32), (40, 32), (700, 48)):
            backend.run(*make_case(M, N, 64, fp8=torch.float8_e4m3fnuz).args)
    aiter_backend.invalidate_plans()
    AiterBackend().run(*make_case(3, 32, 64, fp8=torch.float8_e4m3fnuz).args)
    assert standin.extension_creations == 1 and standin.workspace_bytes == WORKSPACE_BYTES


def test_extension_created_before_first_gemm(platform):
    standin = platform("gfx942")
    # The stand-in raises ContractViolation for a GEMM before hipb_create_extension().
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    with pytest.raises(ContractViolation, match="hipb_create_extension"):
        standin.hipb_mm(case.A, case.B, -1, out_dtype=torch.bfloat16, scaleA=case.scale_a,
                        scaleB=case.scale_b, bpreshuffle=True)
    AiterBackend().run(*case.args)
    assert standin.extension_creations == 1


def test_second_device_is_served_elsewhere(platform, monkeypatch):
    # aiter's handle and workspace belong to the device current at creation: another device in
    # the same process must not reach hipb_mm (auto: the next backend; named: a clear error).
    standin = platform("gfx942")
    backend = AiterBackend()
    current = {"device": ("cuda", 0)}  # what the CPU tensors stand for
    monkeypatch.setattr(aiter_backend, "_device_key", lambda device: current["device"])
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    backend.run(*case.args)  # creates the extension "on cuda:0"
    current["device"] = ("cuda", 1)
    aiter_backend.invalidate_plans()
    _check_close(backend.run(*case.args), case)  # "on cuda:1": served by the next backend
    assert backend.counters["fallback_calls"] == 1 and len(_gemms(standin)) == 1
    assert standin.extension_creations == 1
    aiter_backend.invalidate_plans()
    monkeypatch.setenv("HIPBMM_BACKEND", "aiter")
    with pytest.raises(BackendUnavailableError, match=r"one per process and was created on cuda:0, not cuda:1"):
        backend.run(*case.args)
    av = backend.availability(GPU)
    assert not av.ok and "created on cuda:0, not cuda:1" in av.reason


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
    # N=48 was asked once (its probe); N=32 had a probe (its first call) and one more call.
    assert [c.N for c in standin.calls].count(48) == 1 and [c.N for c in standin.calls].count(32) == 2


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
    # The class is served elsewhere from then on, small M included (its plan was dropped).
    _check_close(backend.run(*small.args), small)
    assert backend.counters["hipb_mm_calls"] == 1 and backend.counters["fallback_calls"] == 2


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


def test_no_solution_under_aiter_online_tuning_does_not_reach_its_tuner(platform, monkeypatch):
    # aiter's inline tuning has no "0 solutions" check (the stand-in exits there): the probe asks
    # hipb_findallsols first and falls back without a GEMM.
    standin = platform("gfx950", no_solution=lambda M, N, K: True)
    monkeypatch.setenv("HIP_ONLINE_TUNING", "1")
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fn)
    backend = AiterBackend()
    _check_close(backend.run(*case.args), case)
    assert standin.exited is None and _gemms(standin) == []
    assert backend.counters["fallback_calls"] == 1


# --- solution indices only from hipb_findallsols, for this hipBLASLt, at this M -----------------

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
    assert standin.calls[-1].fn == "hipb_mm" and standin.calls[-1].used_index == 7
    # One hipb_findallsols for the candidates and the check of the answer (memoised per M).
    assert [c.fn for c in standin.calls].count("hipb_findallsols") == 1


def test_unlisted_index_is_never_passed(platform, monkeypatch, caplog):
    standin = platform("gfx942", solutions=(3, 7, 11))
    monkeypatch.setattr(aiter_backend.tuning, "choose", ChooseSpy({"solution_index": 99}))
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    backend = AiterBackend()
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        for _ in range(3):
            _check_close(backend.run(*case.args), case)
    assert standin.exited is None
    assert {c.solution_index for c in _gemms(standin)} == {-1}
    assert backend.counters["rejected_solution_indices"] == 1  # decided once for this M
    assert sum("tuned hipBLASLt solution 99" in r.getMessage() for r in caplog.records) == 1


def test_index_from_another_hipblaslt_is_never_passed(platform, monkeypatch, tmp_path):
    # Tune with one hipBLASLt, then "upgrade" it: its indices are different. The cached row still
    # loads here (the CPU build records no hipBLASLt version in the key), so hipb_findallsols is
    # what stands between the stale index and exit().
    old = platform("gfx942", solutions=(3, 7, 11))
    tuning.set_cache_dir(tmp_path)
    try:
        tuning.set_mode("online")
        case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
        AiterBackend().run(*case.args)
        cached = _gemms(old)[-1].solution_index
        assert cached in (3, 7, 11) or cached == -1
        new = platform("gfx942", solutions=(20, 21))
        monkeypatch.setattr(aiter_backend, "_hipblaslt_version", lambda: "1.1.0+standin")
        tuning.reload()
        tuning.set_mode("cache")
        _check_close(AiterBackend().run(*case.args), case)
        assert new.exited is None and {c.solution_index for c in _gemms(new)} == {-1}
    finally:
        tuning.set_cache_dir(None)


def test_index_checked_at_each_m(platform, monkeypatch):
    # hipBLASLt may support an algorithm at one M and not at another of the same bucket.
    standin = platform("gfx942", solutions=lambda M, N, K: (3, 7) if M != 30 else (3,))
    monkeypatch.setattr(aiter_backend.tuning, "choose", ChooseSpy({"solution_index": 7}))
    backend = AiterBackend()
    for M in (17, 30, 32, 30, 17):  # one M bucket (17..32)
        case = make_case(M, 32, 64, fp8=torch.float8_e4m3fnuz, seed=M)
        _check_close(backend.run(*case.args), case)
    assert standin.exited is None
    assert [(c.M, c.solution_index) for c in _gemms(standin)][-5:] == [(17, 7), (30, -1), (32, 7), (30, -1), (17, 7)]
    # hipb_findallsols once per M, not once per call.
    assert sorted(c.M for c in standin.calls if c.fn == "hipb_findallsols") == [17, 30, 32]


@st.composite
def _listings(draw):
    Ms = draw(st.lists(st.integers(1, 40), min_size=1, max_size=8))
    listed = {M: frozenset(draw(st.sets(st.integers(0, 6), max_size=4))) for M in set(Ms)}
    cached = draw(st.one_of(st.integers(-1, 7), st.sampled_from([7.0, "3", True, None])))
    return Ms, listed, cached


@given(_listings())
def test_only_listed_indices_reach_hipblaslt_property(data):
    # Whatever the cache holds and whatever hipBLASLt lists at each M: the process never exits,
    # and an index reaches hipb_mm exactly when hipb_findallsols listed it at that M.
    Ms, listed, cached = data
    standin = AiterStandIn(arch="gfx942", solutions=lambda M, N, K: listed[M])
    mp = pytest.MonkeyPatch()
    try:
        mp.setitem(sys.modules, "aiter", standin)
        mp.setattr(aiter_backend, "_gpu_arch", lambda device: "gfx942")
        mp.setattr(aiter_backend, "_hipblaslt_version", lambda: HIPBLASLT)
        mp.setattr(aiter_backend.tuning, "choose", ChooseSpy({"solution_index": cached}))
        mp.delenv("HIP_ONLINE_TUNING", raising=False)
        backend = AiterBackend()
        for M in Ms:
            case = make_case(M, 16, 32, fp8=torch.float8_e4m3fnuz, bias_dtype=None, seed=M)
            _check_close(backend.run(*case.args), case)
    finally:
        mp.undo()
    assert standin.exited is None
    valid = isinstance(cached, int) and not isinstance(cached, bool) and cached >= 0
    for call in _gemms(standin):
        want = cached if valid and cached in listed[call.M] else -1
        assert call.solution_index in (want, -1)  # a first call's probe runs -1 before any index
        assert call.used_index == call.solution_index


def test_unknown_hipblaslt_version_uses_no_index(platform, monkeypatch, caplog):
    standin = platform("gfx942")
    monkeypatch.setattr(aiter_backend, "_hipblaslt_version", lambda: None)
    spy = ChooseSpy({"solution_index": 7})
    monkeypatch.setattr(aiter_backend.tuning, "choose", spy)
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        AiterBackend().run(*make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz).args)
    assert spy.calls == 0 and {c.solution_index for c in _gemms(standin)} == {-1}
    assert any("hipBLASLt's version is unknown" in r.getMessage() for r in caplog.records)


def test_findallsols_without_bpreshuffle_tunes_nothing(platform, monkeypatch):
    standin = platform("gfx942")

    def old_findallsols(mat1, mat2, bias=None, out_dtype=None, scaleA=None, scaleB=None, scaleC=None):
        raise AssertionError("must not be reached: the signature has no bpreshuffle")

    monkeypatch.setattr(standin, "hipb_findallsols", old_findallsols)
    monkeypatch.setattr(aiter_backend.tuning, "choose", ChooseSpy({"solution_index": 7}))
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    _check_close(AiterBackend().run(*case.args), case)
    assert standin.exited is None and {c.solution_index for c in _gemms(standin)} == {-1}


@pytest.mark.parametrize("bad", [{"solution_index": 7.0}, {"solution_index": "7"}, {"solution_index": True},
                                 {"solution_index": None}, {"solution_index": -2}, {}])
def test_corrupt_solution_index_is_rejected_with_one_warning(platform, monkeypatch, caplog, bad):
    standin = platform("gfx942")
    monkeypatch.setattr(aiter_backend.tuning, "choose", ChooseSpy(bad))
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    backend = AiterBackend()
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        for _ in range(2):
            _check_close(backend.run(*case.args), case)
    assert {c.solution_index for c in _gemms(standin)} == {-1}
    assert sum("solution_index must be an int" in r.getMessage() for r in caplog.records) == 1


def test_online_tuning_picks_a_listed_solution(platform, tmp_path):
    standin = platform("gfx942", solutions=(3, 7, 11))
    tuning.set_cache_dir(tmp_path)
    try:
        tuning.set_mode("online")
        case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
        backend = AiterBackend()
        tuned = tuning.counters()["tuned"]  # counters live for the process
        _check_close(backend.run(*case.args), case)
        assert tuning.counters()["tuned"] == tuned + 1
        # Every GEMM of the search used -1 or a listed index.
        assert {c.solution_index for c in _gemms(standin)} <= {-1, 3, 7, 11}
        after = []
        for _ in range(2):
            n_before = len(standin.calls)
            _check_close(backend.run(*case.args), case)
            after.append([(c.fn, c.solution_index) for c in standin.calls[n_before:]])
        # Plan hits: no new search, no new listing, one GEMM each with the tuned index.
        assert after[0] == after[1] and len(after[0]) == 1 and after[0][0][0] == "hipb_mm"
        assert after[0][0][1] in (-1, 3, 7, 11) and standin.exited is None
    finally:
        tuning.set_cache_dir(None)


# --- aiter's own online tuning (HIP_ONLINE_TUNING) wins for M <= 512 --------------------------

def test_under_hip_online_tuning_aiter_picks_up_to_512_and_ours_runs_above(platform, monkeypatch, caplog):
    standin = platform("gfx942", solutions=(3, 7, 11))
    monkeypatch.setenv("HIP_ONLINE_TUNING", "1")
    spy = ChooseSpy({"solution_index": 7})
    monkeypatch.setattr(aiter_backend.tuning, "choose", spy)
    backend = AiterBackend()
    small, large = make_case(512, 32, 64, fp8=torch.float8_e4m3fnuz), make_case(513, 32, 64, fp8=torch.float8_e4m3fnuz)
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        for _ in range(2):
            _check_close(backend.run(*small.args), small)
            _check_close(backend.run(*large.args), large)
    by_m = {}
    for c in _gemms(standin):
        by_m.setdefault(c.M, []).append((c.solution_index, c.used_index))
    # M = 512: we pass -1 and aiter's own choice runs (tuned inline once, then from its CSV).
    assert all(passed == -1 for passed, _ in by_m[512]) and standin.online_tunings == [(512, 32, 64)]
    # M = 513: aiter does not tune there; the tuned index runs.
    assert by_m[513][-1] == (7, 7)
    assert spy.calls == 1  # asked for the M = 513 plan only: nothing tuned or looked up to be discarded
    assert sum("HIP_ONLINE_TUNING is on" in r.getMessage() for r in caplog.records) == 1


def test_under_hip_online_tuning_nothing_is_tuned_or_persisted_up_to_512(platform, monkeypatch, tmp_path):
    standin = platform("gfx942", solutions=(3, 7, 11))
    monkeypatch.setenv("HIP_ONLINE_TUNING", "true")
    tuning.set_cache_dir(tmp_path)
    try:
        tuning.set_mode("online")
        before = tuning.counters()  # counters live for the process
        case = make_case(64, 32, 64, fp8=torch.float8_e4m3fnuz)
        _check_close(AiterBackend().run(*case.args), case)
        assert tuning.counters() == before  # not tuned, not even looked up
        assert [c.solution_index for c in _gemms(standin)] == [-1]  # one GEMM, no candidates timed
        assert not any(p.is_file() and p.suffix == ".csv" for p in tmp_path.rglob("*"))
    finally:
        tuning.set_cache_dir(None)


def test_our_request_forwarded_before_the_first_gemm(platform, monkeypatch):
    standin = platform("gfx942")
    monkeypatch.setenv("HIPBMM_HIP_ONLINE_TUNING", "1")
    monkeypatch.setattr(aiter_backend.tuning, "choose", ChooseSpy({"solution_index": 7}))
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    AiterBackend().run(*case.args)
    assert os.environ["HIP_ONLINE_TUNING"] == "1"
    assert {c.solution_index for c in _gemms(standin)} == {-1} and standin.online_tunings == [(8, 32, 64)]


def test_enabling_vendor_tuning_later_rebuilds_the_plans(platform, monkeypatch):
    standin = platform("gfx942")
    monkeypatch.setattr(aiter_backend.tuning, "choose", ChooseSpy({"solution_index": 7}))
    backend = AiterBackend()
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    backend.run(*case.args)
    assert _gemms(standin)[-1].solution_index == 7
    vendor.enable_vendor_online_tuning()  # writes HIP_ONLINE_TUNING=1; aiter reads it per call
    backend.run(*case.args)
    assert _gemms(standin)[-1].solution_index == -1


# --- launch plans: the per-call path asks nothing twice -------------------------------------

def test_plan_is_built_once_per_m_bucket(platform, monkeypatch):
    platform("gfx942")
    spy = ChooseSpy({"solution_index": -1})
    monkeypatch.setattr(aiter_backend.tuning, "choose", spy)
    backend = AiterBackend()
    for M in (3, 4, 3, 4, 5, 8, 5):  # buckets 4, 4, 4, 4, 8, 8, 8
        backend.run(*make_case(M, 32, 64, fp8=torch.float8_e4m3fnuz).args)
    assert spy.calls == 2 and backend.counters["plans"] == 2
    backend.run(*make_case(3, 48, 64, fp8=torch.float8_e4m3fnuz).args)  # another N: another plan
    backend.run(*make_case(3, 32, 64, fp8=torch.float8_e4m3fnuz, bias_dtype=None).args)  # no bias: another
    assert spy.calls == 4


@pytest.fixture
def spied(platform, monkeypatch):
    """An aiter backend on gfx942 whose tuner answers are counted, and one case to call it with."""
    platform("gfx942")
    spy = ChooseSpy({"solution_index": -1})
    monkeypatch.setattr(aiter_backend.tuning, "choose", spy)
    return spy, AiterBackend(), make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)


@pytest.mark.parametrize("change", ["reload", "set_mode", "invalidate", "vendor"])
def test_plan_rebuilt_when_its_inputs_change(spied, monkeypatch, change):
    spy, backend, case = spied
    backend.run(*case.args)
    backend.run(*case.args)
    assert spy.calls == 1
    if change == "reload":
        tuning.reload()
    elif change == "set_mode":
        tuning.set_mode("cache")
    elif change == "invalidate":
        aiter_backend.invalidate_plans()
    else:
        monkeypatch.setenv("HIPBMM_HIP_ONLINE_TUNING", "1")
        vendor.forward_hip_online_tuning()
    backend.run(*case.args)
    # After a vendor change the M <= 512 plan no longer asks the tuner: it was rebuilt all the same.
    assert spy.calls == (1 if change == "vendor" else 2) and backend.counters["plans"] == 2


def test_forcing_asks_the_tuner_on_every_call(spied):
    spy, backend, case = spied
    backend.run(*case.args)
    with tuning.forcing():
        backend.run(*case.args)
        backend.run(*case.args)
    backend.run(*case.args)
    # Once before, twice while forcing; the plan built by the last forced call then holds.
    assert spy.calls == 3


def test_online_answer_during_capture_is_not_kept(platform, monkeypatch, tmp_path):
    # While a CUDA graph is captured the tuner answers the heuristic without tuning: the plan must
    # ask again on the next safe call instead of keeping -1 for good.
    platform("gfx942", solutions=(3, 7, 11))
    tuning.set_cache_dir(tmp_path)
    try:
        tuning.set_mode("online")
        capturing = {"on": True}
        real = aiter_backend.tuning_bench.unsafe_to_benchmark
        monkeypatch.setattr(aiter_backend.tuning_bench, "unsafe_to_benchmark",
                            lambda A: "a CUDA graph is being captured" if capturing["on"] else real(A))
        backend = AiterBackend()
        case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
        tuned = tuning.counters()["tuned"]  # counters live for the process
        backend.run(*case.args)
        assert tuning.counters()["tuned"] == tuned
        capturing["on"] = False
        backend.run(*case.args)
        assert tuning.counters()["tuned"] == tuned + 1
    finally:
        tuning.set_cache_dir(None)


def test_is_fast_for_matches_is_fast(platform):
    platform("gfx950")
    backend = AiterBackend()
    assert backend.is_fast_for(GPU, 4096, 4096, 1) is backend.is_fast(GPU) is True


# --- benchmarks/aiter_overhead.py runs (its numbers are checked in benchmarks, not here) -------

def _overhead_script():
    spec = importlib.util.spec_from_file_location("hipbmm_bench_aiter_overhead", ROOT / "benchmarks" / "aiter_overhead.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_overhead_benchmark_runs(tmp_path):
    bench = _overhead_script()
    out = tmp_path / "overhead.json"
    bench.main(["--out", str(out), "--calls", "20", "--repeats", "3", "--N", "32", "--K", "64"])
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["records"]] == list(bench.VARIANTS)
    assert all(0 < r["min_us"] <= r["us"] for r in result["records"])
    assert result["device"] and result["versions"]["torch"] == torch.__version__
    # The run restored what it simulated: no stand-in left behind as `aiter`.
    assert not isinstance(sys.modules.get("aiter"), AiterStandIn)


@pytest.mark.parametrize("argv, expected", [
    (["--N", "17"], "--N must be a multiple of 16"),
    (["--K", "48"], "--K of 32"),
    (["--calls", "0"], "expected a positive integer, got 0"),
    (["--repeats", "abc"], "expected a positive integer, got 'abc'"),
])
def test_overhead_benchmark_rejects_bad_arguments(tmp_path, capsys, argv, expected):
    with pytest.raises(SystemExit) as exc:
        _overhead_script().main(["--out", str(tmp_path / "x.json"), *argv])
    assert exc.value.code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


# --- on a real MI300/MI350 with aiter (skipped everywhere else) -------------------------------

def _real_aiter_reason() -> str | None:
    if not torch.version.hip or not torch.cuda.is_available():
        return "needs a ROCm build of torch with a GPU"
    if importlib.util.find_spec("aiter") is None:
        return "needs aiter installed"
    av = registry.availability("aiter", torch.device("cuda", 0))
    return None if av else av.reason


@pytest.mark.gpu
def test_real_aiter_matches_reference_and_keeps_the_contract(monkeypatch):
    why = _real_aiter_reason()
    if why:
        pytest.skip(why)
    import aiter

    creations = []
    real_create = aiter.hipb_create_extension
    monkeypatch.setattr(aiter, "hipb_create_extension", lambda: (creations.append(1), real_create())[1])
    backend = registry.get_backend("aiter")
    arch = aiter_backend._gpu_arch(torch.device("cuda", 0))
    for M in (1, 17, 600):  # decode, odd, above aiter's online-tuning limit
        case = make_case(M, 4096, 4096, fp8=FP8[arch], device="cuda", seed=M)
        out = backend.run(*case.args)
        torch.cuda.synchronize()
        _check_close(out.cpu(), make_case(M, 4096, 4096, fp8=FP8[arch], seed=M))
    assert len(creations) <= 1  # at most this test's first GEMM created it; never again
    # Reaching this line is the other half: an index hipBLASLt could not run would have ended the
    # process inside aiter (exit()), whatever the tuning cache held.
    assert backend.counters["hipb_mm_calls"] + backend.counters["fallback_calls"] >= 3
