"""Candidate validation, rotating inputs and the winner rule, with a deterministic timer."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hipbmm_inductor.ops.reference import reference_hipb_mm_fp8
from hipbmm_inductor.tuning import measure
from hipbmm_inductor.tuning.measure import BenchSettings, DefaultFailed, outputs_agree, rotating_inputs, tune_shape

from tests.support import tuning_fakes as fakes

SMALL = BenchSettings(warmup_calls=1, min_reps=3, max_reps=5, rotate_bytes=1 << 20)


def _tune(default, candidates, args=None, settings=SMALL):
    args = args or fakes.inputs()
    return tune_shape(*args, default=default, candidates=candidates, run=fakes.run, timer=fakes.fake_timer,
                      settings=settings)


def test_rotating_inputs_same_layout_and_values_and_exceed_target():
    A, B, sa, sb, bias, out_dtype = fakes.inputs(M=16, N=64, K=128, bias=torch.bfloat16)
    target = 1 << 20
    sets = rotating_inputs(A, B, sa, sb, bias, out_dtype, target)
    per_set = sum(t.numel() * t.element_size() for t in (A, B, sa, sb, bias)) + 16 * 64 * 2
    assert len(sets) * per_set >= target
    for a, b, x, y, z in sets:
        for new, old in ((a, A), (b, B), (x, sa), (y, sb), (z, bias)):
            assert new.stride() == old.stride() and new.dtype == old.dtype
            assert new.data_ptr() != old.data_ptr()
            assert torch.equal(new.view(torch.uint8) if new.element_size() == 1 else new,
                               old.view(torch.uint8) if old.element_size() == 1 else old)
        assert b.stride() == (1, 128)  # B's preshuffled [K, N] view layout survives the copy
    torch.testing.assert_close(reference_hipb_mm_fp8(*sets[-1], out_dtype), reference_hipb_mm_fp8(A, B, sa, sb, bias, out_dtype),
                               rtol=0, atol=0)


def test_rotating_inputs_default_to_the_benchmarks_cache_rule(monkeypatch):
    # One rule for the tuner and bench (hipbmm_inductor/timing.py): the sets reach 3x the cache.
    from hipbmm_inductor import timing

    monkeypatch.setattr(timing, "cache_bytes", lambda device: 1 << 20)
    args = fakes.inputs(M=16, N=64, K=128)
    A, B, sa, sb, _, out_dtype = args
    per_set = sum(t.numel() * t.element_size() for t in (A, B, sa, sb)) + 16 * 64 * 2
    sets = rotating_inputs(*args)
    assert (len(sets) - 1) * per_set < 3 * (1 << 20) <= len(sets) * per_set


def test_timed_calls_rotate_over_every_input_set():
    seen = []

    def run(config, A, *rest):
        seen.append(A.data_ptr())
        return fakes.run(config, A, *rest)

    args = fakes.inputs()
    sets = rotating_inputs(*args, 1 << 20)
    tune_shape(*args, default=fakes.DEFAULT, candidates=[], run=run, timer=fakes.fake_timer,
               settings=BenchSettings(warmup_calls=1, min_reps=len(sets), max_reps=len(sets)), rotations=sets)
    assert {a.data_ptr() for a, *_ in sets} <= set(seen)


def test_winner_rejections_and_times():
    r = _tune(fakes.DEFAULT, fakes.CANDIDATES)
    assert r.config == fakes.FASTEST_CORRECT
    assert r.time_us == pytest.approx(3.0) and r.default_time_us == pytest.approx(5.0)
    reasons = {str(m.config): m.rejected for m in r.measurements if m.rejected}
    assert any("differ" in why for why in reasons.values())
    assert any("raised RuntimeError" in why for why in reasons.values())


def test_default_is_never_rejected_and_duplicates_timed_once():
    r = _tune(fakes.DEFAULT, [dict(fakes.DEFAULT), fakes.DEFAULT])
    assert len(r.measurements) == 1 and r.config == fakes.DEFAULT


def test_default_raising_is_reported():
    with pytest.raises(DefaultFailed, match="default config"):
        _tune({"cost": 1.0, "raises": True}, fakes.CANDIDATES)


@pytest.mark.parametrize("margin,expected", [(0.0, {"cost": 4.9, "split_k": 2}), (0.05, fakes.DEFAULT)])
def test_noise_margin(margin, expected):
    settings = BenchSettings(warmup_calls=1, min_reps=3, max_reps=5, rotate_bytes=1 << 20, noise_margin=margin)
    assert _tune(fakes.DEFAULT, [{"cost": 4.9, "split_k": 2}], settings=settings).config == expected


@pytest.mark.parametrize("limit,expected_timed", [(0, 1), (1, 2), (2, 3), (None, 3)])
def test_max_candidates_subsamples_but_keeps_default(limit, expected_timed):
    cands = [{"cost": 4.0 + i / 10, "split_k": 2} for i in range(8)]
    settings = BenchSettings(warmup_calls=1, min_reps=3, max_reps=5, rotate_bytes=1 << 20, max_candidates=limit)
    r = _tune(fakes.DEFAULT, cands if limit is not None else cands[:2], settings=settings)
    assert r.measurements[0].config is fakes.DEFAULT
    assert r.benchmarked == expected_timed


@pytest.mark.parametrize("bad", [dict(max_candidates=-1), dict(warmup_calls=0), dict(min_reps=5, max_reps=4), dict(noise_margin=1.5),
                                 dict(time_budget_s=0)])
def test_bench_settings_validated(bad):
    with pytest.raises(ValueError, match="BenchSettings"):
        BenchSettings(**bad)


# -- outputs_agree: what a correct config may differ by, and what it may not -------------------
@given(m=st.integers(1, 40), n=st.sampled_from([16, 48, 96]), k=st.sampled_from([32, 64, 160]),
       split=st.sampled_from([2, 4]), seed=st.integers(0, 2**16))
def test_split_k_orders_agree(m, n, k, split, seed):
    args = fakes.inputs(M=m, N=n, K=k, seed=seed)
    ref = fakes.run({"cost": 1.0}, *args)
    out = fakes.run({"cost": 1.0, "split_k": split}, *args)
    assert outputs_agree(out, ref) is None


@given(seed=st.integers(0, 2**16), factor=st.sampled_from([1.1, 0.5, -1.0]))
def test_one_wrong_element_is_caught(seed, factor):
    args = fakes.inputs(M=9, N=32, K=64, seed=seed)
    ref = fakes.run({"cost": 1.0}, *args)
    out = ref.clone()
    idx = torch.argmax(ref.float().abs())  # the largest element, wrong by >= 10%
    out.view(-1)[idx] = (out.view(-1)[idx].float() * factor).to(out.dtype)
    why = outputs_agree(out, ref)
    assert why is not None and "1 element(s) differ" in why


@pytest.mark.parametrize("bad", ["shape", "dtype", "nan", "not_tensor"])
def test_structural_disagreements(bad):
    ref = torch.ones(4, 16, dtype=torch.bfloat16)
    out = {"shape": torch.ones(4, 32, dtype=torch.bfloat16), "dtype": torch.ones(4, 16),
           "nan": ref.clone().index_fill_(1, torch.tensor([3]), float("nan")), "not_tensor": [1]}[bad]
    assert outputs_agree(out, ref) is not None


def test_wall_timer_returns_one_time_per_call():
    calls = []
    times = measure._wall_timer(lambda i: calls.append(i), 7)
    assert calls == list(range(7)) and len(times) == 7 and all(t >= 0 for t in times)
