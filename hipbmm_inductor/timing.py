"""GPU timing for the benchmarks: CUDA-graph replays (host overhead excluded), several kernels
taking turns under one clock, eager back-to-back launches, and the device's copy bandwidth and
FP8 peak that the roofline floors divide by. Used by ``bench`` (the suite), ``demo`` and the
scripts in ``benchmarks/``.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Sequence

import torch

from hipbmm_inductor import hardware

__all__ = ["capture_graph", "time_graph", "time_graphs", "time_plain", "host_us", "host_us_turns", "copy_bandwidth", "fp8_peak",
           "cache_bytes", "rotations", "ROTATION_CACHE_MULTIPLE"]

# Timed calls rotate through input sets whose bytes, together, reach this many times the
# device's last-level cache, so that no call finds its operands in cache (METHOD.md).
ROTATION_CACHE_MULTIPLE = 3
# MI300X has a 256 MiB Infinity Cache behind its L2, which torch does not report; NVIDIA reports
# its L2. aiter rotates a 128 MiB buffer (docs/contract.md, "aiter online tuning").
_ROCM_LLC_BYTES = 256 << 20
_CPU_LLC_BYTES = 64 << 20


def cache_bytes(device: torch.device) -> int:
    """The last-level cache that timed inputs must not fit in: L2 on NVIDIA, the Infinity Cache
    on ROCm, a generous CPU LLC on the CPU."""
    if device.type != "cuda":
        return _CPU_LLC_BYTES
    if hardware.is_rocm():
        return _ROCM_LLC_BYTES
    return hardware.l2_bytes(device) or _CPU_LLC_BYTES  # no GPU visible: nothing will be timed on it


def rotations(bytes_per_call: int, cache: int, cap: int) -> int:
    """How many input sets of ``bytes_per_call`` reach :data:`ROTATION_CACHE_MULTIPLE` x ``cache``
    (at least 2, so that consecutive calls never share inputs; at most ``cap``)."""
    return max(2, min(cap, math.ceil(ROTATION_CACHE_MULTIPLE * cache / max(bytes_per_call, 1))))


def _median_ms_events(fn: Callable[[], None], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def _warm_up(body: Callable[[], object], times: int) -> None:
    # On a side stream, as CUDA-graph capture wants: compiles, tuning lookups, allocator pools
    # (nothing of that may happen during capture).
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(times):
            body()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()


def _rotations_for(rotation: Callable[[], object], target_ms: float) -> int:
    """How many rotations make a timed body of ~``target_ms`` (from a median of three)."""
    est_ms = statistics.median(_median_ms_events(rotation, 3))
    return max(1, math.ceil(target_ms / max(est_ms, 1e-3)))


def capture_graph(body: Callable[[], object], warmup: int = 3) -> "torch.cuda.CUDAGraph":
    """``body`` captured in a CUDA graph, after ``warmup`` eager runs on a side stream."""
    _warm_up(body, warmup)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    return graph


def time_graph(call: Callable[[int], object], n_sets: int, target_ms: float = 2.0, repeats: int = 15) -> float:
    """Median microseconds per ``call(i)`` from CUDA-graph replays that rotate through ``n_sets``."""
    return time_graphs([call], n_sets, target_ms, repeats)[0]


def time_graphs(calls: Sequence[Callable[[int], object]], n_sets: int, target_ms: float = 2.0,
                repeats: int = 15) -> list[float]:
    """:func:`time_graph` for several functions at once, their replays interleaved.

    Comparing two kernels timed one after the other lets the GPU's clock drift between them
    (a long FP8 GEMM runs at its power limit: 57344 x 8192 at M = 1024 moved 10% from run to
    run on H100); taking turns, replay by replay, both see the same clocks: the clock their
    combined power draw sets, not the one either would hold alone. The order of the turns
    reverses every repeat, so that neither always follows the other.
    """
    if not calls:
        raise ValueError("calls: need at least one function to time")
    if n_sets < 1 or repeats < 1 or not target_ms > 0:
        raise ValueError(f"n_sets and repeats must be >= 1 and target_ms > 0, got n_sets={n_sets}, "
                         f"repeats={repeats}, target_ms={target_ms}")
    graphs, per_replay = [], []
    for call in calls:
        def rotation(call=call):
            for i in range(n_sets):
                call(i)

        _warm_up(rotation, 1)
        rotations = _rotations_for(rotation, target_ms)
        graph = capture_graph(lambda: [rotation() for _ in range(rotations)], warmup=0)
        graph.replay()
        torch.cuda.synchronize()
        graphs.append(graph)
        per_replay.append(rotations * n_sets)
    times = [[] for _ in graphs]
    for r in range(repeats):
        turns = list(zip(graphs, times))
        for g, t in (turns if r % 2 == 0 else reversed(turns)):
            t += _median_ms_events(g.replay, 1)
    del graphs
    return [statistics.median(t) * 1e3 / calls_per for t, calls_per in zip(times, per_replay)]


def time_plain(call: Callable[[int], object], n_sets: int, target_ms: float = 2.0, repeats: int = 15) -> float:
    """Median microseconds per ``call(i)`` issued eagerly back to back (host overhead included)."""
    def rotation():
        for i in range(n_sets):
            call(i)

    rotation()
    torch.cuda.synchronize()
    rotations = _rotations_for(rotation, target_ms)

    def body():
        for _ in range(rotations):
            rotation()

    return statistics.median(_median_ms_events(body, repeats)) * 1e3 / (rotations * n_sets)


def host_us(fn: Callable[[], object], calls: int, repeats: int, warmup: int = 10, sync: bool = False) -> float:
    """Host microseconds per call: the wall time of ``calls`` back-to-back calls with nothing
    synchronised inside the loop, median over ``repeats`` loops. On a GPU the launch queue absorbs
    the kernels (keep ``calls`` in the hundreds, below the queue's depth), so the loop time is the
    host's; ``sync`` synchronises the device between loops (outside the timed part)."""
    return host_us_turns({"fn": fn}, calls, repeats, warmup, sync)["fn"]


def host_us_turns(fns: dict, calls: int, repeats: int, warmup: int = 10, sync: bool = False) -> dict:
    """:func:`host_us` of several functions, timed in turns (one loop of each per repeat), so
    that a drift of the host's speed during the run reaches all of them alike and their ratios
    stay fair; ``{name: median us per call}``."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if sync:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - t0) / calls * 1e6)
    if sync:
        torch.cuda.synchronize()
    return {name: statistics.median(v) for name, v in samples.items()}


def copy_bandwidth(device, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    ms = statistics.median(_median_ms_events(lambda: dst.copy_(src), 20))
    return 2 * nbytes / (ms * 1e-3)


def fp8_peak(device, fp8: torch.dtype, n: int = 8192) -> float:
    """FP8 dense FLOP/s of the vendor GEMM at n^3 (tensorwise scales, fast accumulation)."""
    a = torch.randn(n, n, device=device).to(fp8)
    b = torch.randn(n, n, device=device).to(fp8).t()
    one = torch.ones((), device=device)
    f = lambda: torch._scaled_mm(a, b, one, one, out_dtype=torch.bfloat16, use_fast_accum=True)  # noqa: E731
    f()
    ms = statistics.median(_median_ms_events(f, 20))
    return 2 * n**3 / (ms * 1e-3)
