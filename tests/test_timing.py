"""GPU timing (``hipbmm_inductor.timing``): the accounting of per-call times (needs a GPU)."""

from __future__ import annotations

import pytest
import torch

from hipbmm_inductor import timing


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_time_graphs_reports_time_per_call():
    """Two calls of known relative cost (a GPU spin of N and 2N cycles), timed interleaved: each
    is unrolled a different number of times per replay (``target_ms`` / its own estimate), so a
    wrong per-call division shows as a ratio far from 2. The 15% band covers launch gaps
    between the spins (~1-2 us against ~100 us per call)."""
    cycles = 200_000  # ~100 us at H100 clocks
    a, b = timing.time_graphs([lambda i: torch.cuda._sleep(cycles), lambda i: torch.cuda._sleep(2 * cycles)],
                             n_sets=3, target_ms=1.0, repeats=5)
    assert 1.7 < b / a < 2.3, (a, b)
    single = timing.time_graph(lambda i: torch.cuda._sleep(cycles), n_sets=3, target_ms=1.0, repeats=5)
    assert 0.85 < single / a < 1.15, (single, a)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_capture_graph_replays_the_body():
    """The captured body runs once per replay, on the graph's own buffers: a counter tensor
    incremented in the body reads warmup + replays afterwards (the warm-up ran eagerly)."""
    count = torch.zeros((), device="cuda")
    graph = timing.capture_graph(lambda: count.add_(1), warmup=2)
    torch.cuda.synchronize()
    assert count.item() == 2  # capture itself does not run the body
    for _ in range(5):
        graph.replay()
    torch.cuda.synchronize()
    assert count.item() == 7


@pytest.mark.parametrize("kwargs, match", [(dict(calls=[], n_sets=2), "calls"),
                                           (dict(calls=[print], n_sets=0), "n_sets"),
                                           (dict(calls=[print], n_sets=2, repeats=0), "repeats"),
                                           (dict(calls=[print], n_sets=2, target_ms=0), "target_ms")])
def test_time_graphs_names_bad_arguments(kwargs, match):
    """Checked before any GPU work: a clear error, not a division by zero or an empty median."""
    with pytest.raises(ValueError, match=match):
        timing.time_graphs(**kwargs)


def test_host_us_turns_times_each_function_in_turns():
    """Every function gets its warm-up, then one loop of ``calls`` per repeat, in turns: the call
    order shows the interleaving. Each result is that function's own median per call: a function
    that spins ~10x longer reads several times slower (the bound only needs the loops kept
    apart, so it is far from the 10x that the spin aims at, whatever the CI machine's load)."""
    import time

    order = []

    def spin(us):
        end = time.perf_counter() + us * 1e-6
        while time.perf_counter() < end:
            pass

    fns = {"fast": lambda: order.append("fast") or spin(5), "slow": lambda: order.append("slow") or spin(50)}
    got = timing.host_us_turns(fns, calls=4, repeats=3, warmup=2)
    assert list(got) == ["fast", "slow"]
    assert order == ["fast"] * 2 + ["slow"] * 2 + (["fast"] * 4 + ["slow"] * 4) * 3
    assert got["slow"] > 3 * got["fast"] > 0, got
    assert timing.host_us(fns["fast"], calls=2, repeats=1, warmup=0) > 0
