"""Launch plans: the per-call path asks nothing twice; benchmarks/aiter_overhead.py runs; and the real aiter on an MI300/MI350 (skipped everywhere else).

Against the recording stand-in for ``aiter`` (:mod:`tests.support.aiter_standin`); see conftest.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from hipbmm_inductor import tuning
from hipbmm_inductor.ops import aiter_backend, registry
from hipbmm_inductor.ops.aiter_backend import AiterBackend
from hipbmm_inductor.tuning import measure, rocm_online
from tests.support.aiter_shared import FP8, GPU, ChooseSpy, check_close
from tests.support.aiter_standin import AiterStandIn
from tests.support.bench_scripts import load_script
from tests.support.inputs import make_case


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
        rocm_online.forward_hip_online_tuning()
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
        real = measure.unsafe_to_benchmark
        monkeypatch.setattr(measure, "unsafe_to_benchmark",
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
    return load_script("aiter_overhead.py")


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
        check_close(out.cpu(), make_case(M, 4096, 4096, fp8=FP8[arch], seed=M))
    assert len(creations) <= 1  # at most this test's first GEMM created it; never again
    # Reaching this line is the other half: an index hipBLASLt could not run would have ended the
    # process inside aiter (exit()), whatever the tuning cache held.
    assert backend.counters["hipb_mm_calls"] + backend.counters["fallback_calls"] >= 3
