"""Solution indices only from hipb_findallsols, for this hipBLASLt, at this M; and who wins under aiter's own online tuning (HIP_ONLINE_TUNING: aiter, for M <= 512).

Against the recording stand-in for ``aiter`` (:mod:`tests.support.aiter_standin`); see conftest.py.
"""

from __future__ import annotations

import logging
import os
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hipbmm_inductor import tuning
from hipbmm_inductor.ops import aiter_backend
from hipbmm_inductor.ops.aiter_backend import AiterBackend
from hipbmm_inductor.tuning import rocm_online
from tests.support.aiter_shared import HIPBLASLT, ChooseSpy, check_close, gemms
from tests.support.aiter_standin import AiterStandIn
from tests.support.inputs import make_case


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
    check_close(out, case)
    check_close(seen["run_out"], case)
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
            check_close(backend.run(*case.args), case)
    assert standin.exited is None
    assert {c.solution_index for c in gemms(standin)} == {-1}
    assert backend.counters["rejected_solution_indices"] == 1  # decided once for this M
    assert sum("tuned hipBLASLt solution 99" in r.getMessage() for r in caplog.records) == 1


def test_index_from_another_hipblaslt_is_never_passed(platform, monkeypatch, tmp_path):
    # Tune with one hipBLASLt, then "upgrade" it: its indices are different. The cached row still
    # loads here (the CPU build records no hipBLASLt version in the key), so hipb_findallsols is
    # what stands between the stale index and exit().
    old = platform("gfx942", solutions=(3, 7, 11))
    tuning.set_cache_dir(tmp_path)

    def timer(fn, reps):  # solution 7 "fastest": the tuner must store it, so that a stale index exists
        times = []
        for i in range(reps):
            fn(i)
            times.append(1e-6 if gemms(old)[-1].solution_index == 7 else 5e-6)
        return times

    tuning.set_timer(timer)
    try:
        tuning.set_mode("online")
        case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
        AiterBackend().run(*case.args)
        assert gemms(old)[-1].solution_index == 7
        new = platform("gfx942", solutions=(20, 21))
        monkeypatch.setattr(aiter_backend, "_hipblaslt_version", lambda: "1.1.0+standin")
        tuning.reload()
        tuning.set_mode("cache")
        after = AiterBackend()
        check_close(after.run(*case.args), case)
        assert new.exited is None and {c.solution_index for c in gemms(new)} == {-1}
        assert after.counters["rejected_solution_indices"] == 1  # the cached 7 reached the check, refused
    finally:
        tuning.set_timer(None)
        tuning.set_cache_dir(None)


def test_index_checked_at_each_m(platform, monkeypatch):
    # hipBLASLt may support an algorithm at one M and not at another of the same bucket.
    standin = platform("gfx942", solutions=lambda M, N, K: (3, 7) if M != 30 else (3,))
    monkeypatch.setattr(aiter_backend.tuning, "choose", ChooseSpy({"solution_index": 7}))
    backend = AiterBackend()
    for M in (17, 30, 32, 30, 17):  # one M bucket (17..32)
        case = make_case(M, 32, 64, fp8=torch.float8_e4m3fnuz, seed=M)
        check_close(backend.run(*case.args), case)
    assert standin.exited is None
    assert [(c.M, c.solution_index) for c in gemms(standin)][-5:] == [(17, 7), (30, -1), (32, 7), (30, -1), (17, 7)]
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
            check_close(backend.run(*case.args), case)
    finally:
        mp.undo()
    assert standin.exited is None
    valid = isinstance(cached, int) and not isinstance(cached, bool) and cached >= 0
    calls = gemms(standin)
    # The first GEMM is the shape class's probe (-1); every call after it passes exactly the
    # listed index, or -1 where hipb_findallsols did not list it at that M.
    assert calls[0].solution_index == -1
    for call in calls[1:]:
        want = cached if valid and cached in listed[call.M] else -1
        assert call.solution_index == want, (call.M, call.solution_index, want)
    assert all(call.used_index == call.solution_index for call in calls)


def test_unknown_hipblaslt_version_uses_no_index(platform, monkeypatch, caplog):
    standin = platform("gfx942")
    monkeypatch.setattr(aiter_backend, "_hipblaslt_version", lambda: None)
    spy = ChooseSpy({"solution_index": 7})
    monkeypatch.setattr(aiter_backend.tuning, "choose", spy)
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        AiterBackend().run(*make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz).args)
    assert spy.calls == 0 and {c.solution_index for c in gemms(standin)} == {-1}
    assert any("hipBLASLt's version is unknown" in r.getMessage() for r in caplog.records)


def test_findallsols_without_bpreshuffle_tunes_nothing(platform, monkeypatch):
    standin = platform("gfx942")

    def old_findallsols(mat1, mat2, bias=None, out_dtype=None, scaleA=None, scaleB=None, scaleC=None):
        raise AssertionError("must not be reached: the signature has no bpreshuffle")

    monkeypatch.setattr(standin, "hipb_findallsols", old_findallsols)
    monkeypatch.setattr(aiter_backend.tuning, "choose", ChooseSpy({"solution_index": 7}))
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    check_close(AiterBackend().run(*case.args), case)
    assert standin.exited is None and {c.solution_index for c in gemms(standin)} == {-1}


@pytest.mark.parametrize("bad", [{"solution_index": 7.0}, {"solution_index": "7"}, {"solution_index": True},
                                 {"solution_index": None}, {"solution_index": -2}, {}])
def test_corrupt_solution_index_is_rejected_with_one_warning(platform, monkeypatch, caplog, bad):
    standin = platform("gfx942")
    monkeypatch.setattr(aiter_backend.tuning, "choose", ChooseSpy(bad))
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    backend = AiterBackend()
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        for _ in range(2):
            check_close(backend.run(*case.args), case)
    assert {c.solution_index for c in gemms(standin)} == {-1}
    assert sum("solution_index must be an int" in r.getMessage() for r in caplog.records) == 1


def test_online_tuning_picks_a_listed_solution(platform, tmp_path):
    standin = platform("gfx942", solutions=(3, 7, 11))
    tuning.set_cache_dir(tmp_path)
    try:
        tuning.set_mode("online")
        case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
        backend = AiterBackend()
        tuned = tuning.counters()["tuned"]  # counters live for the process
        check_close(backend.run(*case.args), case)
        assert tuning.counters()["tuned"] == tuned + 1
        # Every GEMM of the search used -1 or a listed index.
        assert {c.solution_index for c in gemms(standin)} <= {-1, 3, 7, 11}
        after = []
        for _ in range(2):
            n_before = len(standin.calls)
            check_close(backend.run(*case.args), case)
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
            check_close(backend.run(*small.args), small)
            check_close(backend.run(*large.args), large)
    by_m = {}
    for c in gemms(standin):
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
        check_close(AiterBackend().run(*case.args), case)
        assert tuning.counters() == before  # not tuned, not even looked up
        assert [c.solution_index for c in gemms(standin)] == [-1]  # one GEMM, no candidates timed
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
    assert {c.solution_index for c in gemms(standin)} == {-1} and standin.online_tunings == [(8, 32, 64)]


def test_enabling_vendor_tuning_later_rebuilds_the_plans(platform, monkeypatch):
    standin = platform("gfx942")
    monkeypatch.setattr(aiter_backend.tuning, "choose", ChooseSpy({"solution_index": 7}))
    backend = AiterBackend()
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    backend.run(*case.args)
    assert gemms(standin)[-1].solution_index == 7
    rocm_online.enable_vendor_online_tuning()  # writes HIP_ONLINE_TUNING=1; aiter reads it per call
    backend.run(*case.args)
    assert gemms(standin)[-1].solution_index == -1
