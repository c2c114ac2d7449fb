"""Once per process: aiter's hipBLASLt extension; and the probe for a preshuffled solution with its fallback (gfx950 with some hipBLASLt releases).

Against the recording stand-in for ``aiter`` (:mod:`tests.support.aiter_standin`); see conftest.py.
"""

from __future__ import annotations

import logging
import threading

import pytest
import torch

from hipbmm_inductor import BackendUnavailableError
from hipbmm_inductor.ops import aiter_backend, registry
from hipbmm_inductor.ops.aiter_backend import AiterBackend
from hipbmm_inductor.ops.registry import Availability
from tests.support.aiter_shared import GPU, check_close, gemms
from tests.support.aiter_standin import WORKSPACE_BYTES, ContractViolation
from tests.support.inputs import make_case


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
    check_close(backend.run(*case.args), case)  # "on cuda:1": served by the next backend
    assert backend.counters["fallback_calls"] == 1 and len(gemms(standin)) == 1
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
        check_close(out, case)
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
        check_close(backend.run(*good.args), good)
        check_close(backend.run(*bad.args), bad)
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
    check_close(backend.run(*small.args), small)
    check_close(backend.run(*large.args), large)
    assert backend.counters["hipb_mm_calls"] == 1 and backend.counters["fallback_calls"] == 1
    assert backend.counters["shape_classes_without_solution"] == 1
    # The class is served elsewhere from then on, small M included (its plan was dropped).
    check_close(backend.run(*small.args), small)
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
    check_close(AiterBackend().run(*case.args), case)
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
    check_close(backend.run(*case.args), case)
    assert standin.exited is None and gemms(standin) == []
    assert backend.counters["fallback_calls"] == 1
