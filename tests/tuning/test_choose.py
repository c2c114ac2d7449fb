"""choose(): modes, cache hits without benchmarking, tuning decisions, the capture/tracing guard."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hipbmm_inductor import envs, tuning
from hipbmm_inductor.ops.reference import reference_hipb_mm_fp8
from hipbmm_inductor.tuning import measure

from tests.support import tuning_fakes as fakes


@pytest.fixture(autouse=True)
def _fake_timer():
    tuning.set_timer(fakes.fake_timer)
    fakes.STATE.runs.clear()


def test_default_mode_is_cache_and_never_benchmarks(tuning_env):
    assert tuning.get_mode() == "cache"
    args = fakes.inputs()
    assert fakes.choose(*args) is fakes.DEFAULT
    assert fakes.STATE.runs == []  # no candidate ran
    assert tuning.counters()["misses"] == 1
    assert not tuning_env.exists()  # a miss in cache mode writes nothing


def test_off_mode_ignores_the_cache(tuning_env):
    args = fakes.inputs()
    tuning.set_mode("online")
    assert fakes.choose(*args) == fakes.FASTEST_CORRECT
    tuning.set_mode("off")
    assert fakes.choose(*args) is fakes.DEFAULT
    assert tuning.counters()["hits"] == 0


def test_online_picks_fastest_correct_candidate_and_persists(tuning_env):
    tuning.set_mode("online")
    args = fakes.inputs()
    assert fakes.choose(*args) == fakes.FASTEST_CORRECT
    c = tuning.counters()
    assert c["tuned"] == 1
    assert c["rejected_configs"] == 2  # the wrong one and the raising one
    assert c["benchmarked_configs"] == 3  # default + two correct candidates
    rows = tuning.tuner().store.load("cpu")
    assert len(rows) == 1 and rows[0].config_dict() == fakes.FASTEST_CORRECT
    assert rows[0].time_us == pytest.approx(3.0) and rows[0].default_time_us == pytest.approx(5.0)

    # Same process: a hit, nothing runs.
    fakes.STATE.runs.clear()
    assert fakes.choose(*args) == fakes.FASTEST_CORRECT
    assert fakes.STATE.runs == []

    # A "new process" (fresh in-memory state, same folder) in cache mode: hit, zero benchmarking.
    tuning.reload()
    tuning.reset_counters()
    tuning.set_mode("cache")
    assert fakes.choose(*args) == fakes.FASTEST_CORRECT
    assert fakes.STATE.runs == []
    assert tuning.counters()["hits"] == 1 and tuning.counters()["benchmarked_configs"] == 0


@pytest.mark.parametrize("m,same_bucket_m", [(1, 1), (5, 8), (8, 7), (100, 65), (300, 512)])
def test_m_bucket_shares_results(m, same_bucket_m):
    tuning.set_mode("online")
    fakes.choose(*fakes.inputs(M=m))
    tuning.set_mode("cache")
    assert fakes.choose(*fakes.inputs(M=same_bucket_m)) == fakes.FASTEST_CORRECT
    assert fakes.choose(*fakes.inputs(M=2 * m + 1)) is fakes.DEFAULT  # the next bucket is a miss


@pytest.mark.parametrize(
    "change",
    ["bias", "n", "k", "backend", "extra_key", "out_of_key_scale_values"],
)
def test_key_components(change):
    tuning.set_mode("online")
    fakes.choose(*fakes.inputs())
    tuning.set_mode("cache")
    kwargs = {}
    args = fakes.inputs()
    if change == "bias":
        args = fakes.inputs(bias=torch.bfloat16)
    elif change == "n":
        args = fakes.inputs(N=128)
    elif change == "k":
        args = fakes.inputs(K=128)
    elif change == "backend":
        kwargs["backend"] = "other"
    elif change == "extra_key":
        kwargs["extra_key"] = "variant-b"
    elif change == "out_of_key_scale_values":
        args = fakes.inputs(seed=7)  # other values, same shapes/dtypes: must hit
        assert fakes.choose(*args, **kwargs) == fakes.FASTEST_CORRECT
        return
    assert fakes.choose(*args, **kwargs) is fakes.DEFAULT


def test_noise_margin_keeps_default():
    # A candidate only 1% faster than the default is within timing noise: keep the default.
    tuning.set_mode("online")
    cands = [{"cost": 5.0 * (1 - measure.NOISE_MARGIN / 2), "split_k": 2}]
    assert fakes.choose(*fakes.inputs(), candidates=cands) == fakes.DEFAULT
    row = tuning.tuner().store.load("cpu")[0]
    assert row.config_dict() == fakes.DEFAULT  # the decision is stored too: no re-tuning next process


def test_default_that_raises_leaves_shape_untuned_once(caplog):
    tuning.set_mode("online")
    broken = {"cost": 1.0, "raises": True}
    args = fakes.inputs()
    with caplog.at_level("WARNING", logger="hipbmm_inductor"):
        assert fakes.choose(*args, default=broken) is broken
        assert fakes.choose(*args, default=broken) is broken
    assert tuning.counters()["failed"] == 1  # tried once per process, not per call
    assert sum("left" in r.getMessage() and "untuned" in r.getMessage() for r in caplog.records) == 1
    assert tuning.tuner().store.load("cpu") == []


def test_candidates_not_called_unless_tuning():
    calls = []

    def cands():
        calls.append(1)
        return fakes.CANDIDATES

    args = fakes.inputs()
    tuning.choose("fake_tune", *args, default=fakes.DEFAULT, candidates=cands, run=fakes.run)
    assert calls == []
    tuning.set_mode("online")
    tuning.choose("fake_tune", *args, default=fakes.DEFAULT, candidates=cands, run=fakes.run)
    tuning.choose("fake_tune", *args, default=fakes.DEFAULT, candidates=cands, run=fakes.run)
    assert calls == [1]


def test_tuned_config_gives_right_numbers():
    tuning.set_mode("online")
    args = fakes.inputs(M=17, N=96, K=128, bias=torch.float32)
    config = fakes.choose(*args)
    out = fakes.run(config, *args)
    ref = reference_hipb_mm_fp8(*args)
    # split-K changes only the fp32 summation order before one bf16 rounding: within 2 bf16 ulps
    # (2^-7 relative) plus a small absolute term for cancelled sums.
    torch.testing.assert_close(out.float(), ref.float(), rtol=2**-7, atol=2**-7 * ref.float().abs().max().item())


# -- modes: environment vs Python -----------------------------------------------------------
@pytest.mark.parametrize("mode", ["off", "cache", "online"])
def test_mode_from_environment(monkeypatch, mode):
    monkeypatch.setenv("HIPBMM_TUNING", mode.upper())
    tuning.reload()  # the environment is read when the tuner starts (the hot path never reads it)
    assert tuning.get_mode() == mode
    expected = fakes.DEFAULT if mode != "online" else fakes.FASTEST_CORRECT
    assert fakes.choose(*fakes.inputs()) == expected


def test_python_mode_wins_over_environment_and_none_restores(monkeypatch):
    monkeypatch.setenv("HIPBMM_TUNING", "off")
    tuning.set_mode("online")
    assert tuning.get_mode() == "online"
    assert fakes.choose(*fakes.inputs()) == fakes.FASTEST_CORRECT  # effective at once
    tuning.set_mode(None)
    assert tuning.get_mode() == "off"
    assert fakes.choose(*fakes.inputs()) is fakes.DEFAULT


def test_bad_mode_names_the_rule(monkeypatch):
    with pytest.raises(ValueError, match="mode must be one of off, cache, online"):
        tuning.set_mode("sometimes")
    monkeypatch.setenv("HIPBMM_TUNING", "always")
    with pytest.raises(ValueError, match="HIPBMM_TUNING='always'"):
        tuning.reload()
    monkeypatch.delenv("HIPBMM_TUNING")


def test_default_cache_dir_is_user_cache_not_cwd(monkeypatch, tmp_path):
    tuning.set_cache_dir(None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    tuning.reload()
    assert tuning.cache_dir() == str(tmp_path / "xdg" / "hipbmm_inductor")
    monkeypatch.setenv("HIPBMM_TUNING_CACHE", str(tmp_path / "mine"))
    tuning.reload()
    assert tuning.cache_dir() == str(tmp_path / "mine")


def test_switching_cache_dir_reloads(tmp_path):
    tuning.set_mode("online")
    args = fakes.inputs()
    fakes.choose(*args)
    tuning.set_mode("cache")
    tuning.set_cache_dir(str(tmp_path / "other"))
    assert fakes.choose(*args) is fakes.DEFAULT


# -- never benchmark during CUDA-graph capture or torch.compile tracing -----------------------
@pytest.mark.parametrize("guard", ["_capturing", "_compiling"])
def test_unsafe_moments_use_default_and_record(monkeypatch, tuning_env, guard):
    tuning.set_mode("online")
    monkeypatch.setattr(measure, guard, lambda: True)
    args = fakes.inputs()
    assert fakes.choose(*args) is fakes.DEFAULT
    assert fakes.choose(*args) is fakes.DEFAULT
    assert fakes.STATE.runs == []  # nothing launched, nothing allocated
    c = tuning.counters()
    assert c["skipped_unsafe"] == 2 and c["recorded"] == 1 and c["tuned"] == 0
    recorded = (tuning_env / "untuned-cpu.csv").read_text()
    assert "online tuning skipped" in recorded
    # Once it is safe again, the next call tunes.
    monkeypatch.setattr(measure, guard, lambda: False)
    assert fakes.choose(*args) == fakes.FASTEST_CORRECT


def test_inside_torch_compile_tracing_no_benchmark():
    tuning.set_mode("online")
    A, B, sa, sb, bias, out_dtype = fakes.inputs()

    def f(a, s):
        config = fakes.choose(a, B, s, sb, bias, out_dtype)
        return a.float() * config["cost"]

    torch._dynamo.reset()
    out = torch.compile(f, backend="eager")(A, sa)
    assert fakes.STATE.runs == []
    assert tuning.counters()["tuned"] == 0 and tuning.counters()["skipped_unsafe"] >= 1
    torch.testing.assert_close(out, A.float() * fakes.DEFAULT["cost"])  # the default was used
    torch._dynamo.reset()


def test_capture_check_does_not_initialise_cuda(monkeypatch):
    called = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: called.append(1) or True)
    assert measure.unsafe_to_benchmark(fakes.inputs()[0]) is None
    assert called == []


def test_fake_tensors_never_benchmarked():
    from torch._subclasses.fake_tensor import FakeTensorMode

    tuning.set_mode("online")
    args = fakes.inputs()
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake_args = [mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in args]
        assert fakes.choose(*fake_args) is fakes.DEFAULT
    assert fakes.STATE.runs == []


def test_env_table_documents_tuning_variables():
    for name in ("HIPBMM_TUNING", "HIPBMM_TUNING_CACHE", "HIPBMM_TUNING_RECORD", "HIPBMM_HIP_ONLINE_TUNING"):
        assert f"``{name}``" in envs.__doc__
    assert "hipbmm_inductor.tuning.set_mode" in envs.__doc__
    assert "hipbmm_inductor.tuning.rocm_online.enable_vendor_online_tuning" in envs.__doc__


def test_online_miss_rereads_file_before_tuning(tuning_env):
    """A shape another process tuned after this one loaded its table is not tuned again."""
    from hipbmm_inductor.tuning.key import device_info
    from hipbmm_inductor.tuning.rows import Row
    from hipbmm_inductor.tuning.store import Store

    tuning.set_mode("online")
    fakes.choose(*fakes.inputs(N=32))  # loads the (empty) table, tunes one shape
    info = device_info(torch.device("cpu"))
    other = Row(backend="fake_tune", arch=info.arch, device_name=info.name, versions=info.versions,
                a_dtype="float8_e4m3fn", b_dtype="float8_e4m3fn", out_dtype="bfloat16", bias="none", n=64, k=64,
                m_bucket=8, extra="", config='{"cost": 4.0, "split_k": 4}', time_us=4.0, default_time_us=5.0,
                measured_at="2026-11-24T03:00:00Z")
    Store(str(tuning_env)).upsert(info.arch, [other], info.versions)  # "another process"
    fakes.STATE.runs.clear()
    assert fakes.choose(*fakes.inputs(N=64)) == {"cost": 4.0, "split_k": 4}
    assert fakes.STATE.runs == [] and tuning.counters()["tuned"] == 1


@given(m=st.integers(1, 1 << 16))
@settings(max_examples=25)
def test_table_bucket_matches_m_bucket(m):
    from hipbmm_inductor.tuning.key import m_bucket

    tuning.set_mode("online")
    args = list(fakes.inputs(M=1, N=16, K=32))
    args[0] = torch.empty(m, 32, dtype=args[0].dtype)  # only the shape matters for the key
    args[2] = torch.ones(m, 1)
    t = tuning.tuner()
    table = t.table(torch.device("cpu"))
    key = ("fake_tune", "", args[0].dtype, args[1].dtype, torch.bfloat16, None, 16, 32, m_bucket(m))
    table[key] = {"cost": 9.0}
    try:
        assert fakes.choose(*args) == {"cost": 9.0}
    finally:
        del table[key]


@pytest.mark.parametrize("compiled", [False, True])
def test_through_the_op_and_torch_compile(compiled):
    """hipb_mm_fp8 -> backend -> choose: tuned at the first real call (never while tracing)."""
    import hipbmm_inductor as hi
    from hipbmm_inductor.ops import registry

    fakes.register()
    try:
        hi.set_backend("fake_tune")
        tuning.set_mode("online")
        A, B, sa, sb, bias, out_dtype = fakes.inputs(M=12, N=48, K=96, bias=torch.bfloat16)
        fn = lambda a, s: hi.hipb_mm_fp8(a, B, s, sb, bias)  # noqa: E731
        if compiled:
            torch._dynamo.reset()
            fn = torch.compile(fn, backend="eager", fullgraph=True)
        out = fn(A, sa)
        assert tuning.counters()["tuned"] == 1 and tuning.counters()["skipped_unsafe"] == 0
        assert fakes.STATE.runs[-1] == fakes.FASTEST_CORRECT  # the tuned config computed `out`
        ref = reference_hipb_mm_fp8(A, B, sa, sb, bias, out_dtype)
        # split-K config vs one-pass reference: fp32 summation order, then one bf16 rounding each.
        torch.testing.assert_close(out.float(), ref.float(), rtol=2**-7, atol=2**-7 * ref.float().abs().max().item())
    finally:
        registry._backends.pop("fake_tune", None)
        hi.set_backend(None)
        torch._dynamo.reset()
