"""Timing a backend's candidate configs for one GEMM shape.

The procedure, for inputs ``(A, B, scale_a, scale_b, bias)`` of one call:

1. ``reference = run(default, inputs)``: the heuristic's output is the numerical reference.
2. For each candidate: run it once on the caller's inputs; reject it if it raises or its output
   disagrees with the reference (tolerance below), so a config that overflows shared memory or
   mis-tiles an odd shape can never be chosen.
3. Time the survivors (the default included) on *rotating* copies of the inputs whose total size
   exceeds the last-level cache, so no candidate is timed on cache-resident operands: a serving
   process streams a different weight through the cache for every layer. Each candidate gets
   warm-up calls (the first call compiles a Triton kernel) and then ``reps`` timed calls; its
   time is the median.
4. The fastest wins, but it must beat the default by more than the noise margin; otherwise the
   default (already known good) stays.

Never called while a CUDA graph is being captured or while ``torch.compile`` traces: timing
allocates, synchronises and launches extra kernels, which breaks a capture (the failure aiter's
online tuning has, docs/contract.md, "aiter online tuning"). :func:`unsafe_to_benchmark` says when.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from hipbmm_inductor import timing

from .rows import canonical_config

__all__ = [
    "Timer",
    "Measurement",
    "TuneResult",
    "unsafe_to_benchmark",
    "rotating_inputs",
    "outputs_agree",
    "default_timer",
    "tune_shape",
    "NOISE_MARGIN",
    "BenchSettings",
    "DEFAULT_SETTINGS",
]

log = logging.getLogger("hipbmm_inductor")

# Timer(fn, reps) -> per-call seconds of fn(0), fn(1), ..., fn(reps - 1). Injectable for tests.
Timer = Callable[[Callable[[int], object], int], list]



@dataclass(frozen=True)
class BenchSettings:
    """How hard to measure. The defaults suit GPUs; tests shrink them."""

    warmup_calls: int = 3  # the first call of a Triton config compiles it
    min_reps: int = 10
    max_reps: int = 100
    time_budget_s: float = 0.02  # per candidate; sets reps between min_reps and max_reps
    rotate_bytes: Optional[int] = None  # None: timing.ROTATION_CACHE_MULTIPLE x the last-level cache
    max_candidates: Optional[int] = None  # None: all; else an evenly spaced subset (plus the default)
    # NOTE: a candidate replaces the default only if at least 5% faster: single points move
    # +-5% between benchmark runs on the H100 (docs/benchmarks.md).
    noise_margin: float = 0.05

    def __post_init__(self):
        if self.warmup_calls < 1 or self.min_reps < 1 or self.max_reps < self.min_reps:
            raise ValueError(f"BenchSettings: need warmup_calls >= 1 and 1 <= min_reps <= max_reps, got {self}")
        if self.max_candidates is not None and self.max_candidates < 0:
            raise ValueError(f"BenchSettings: max_candidates must be >= 0 or None, got {self.max_candidates}")
        if not 0 <= self.noise_margin < 1 or self.time_budget_s <= 0:
            raise ValueError(f"BenchSettings: need 0 <= noise_margin < 1 and time_budget_s > 0, got {self}")


DEFAULT_SETTINGS = BenchSettings()
NOISE_MARGIN = DEFAULT_SETTINGS.noise_margin
# Enough sets for a 1 MiB weight to exceed a 256 MiB cache three times over; small enough that
# building them (one copy each) stays well under a millisecond per set.
MAX_ROTATIONS = 768


def _capturing() -> bool:
    # Only ask CUDA when it is already initialised: the question must not initialise it.
    return torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing()


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def unsafe_to_benchmark(A: Tensor) -> Optional[str]:
    """Why benchmarking now would be wrong, or ``None`` when it is safe."""
    if _compiling():
        return "torch.compile is tracing"
    if _capturing():
        return "a CUDA graph is being captured"
    if A.device.type == "meta" or type(A).__name__ == "FakeTensor":
        return "inputs have no data (fake or meta tensors)"
    return None


def _clone_like(t: Optional[Tensor]) -> Optional[Tensor]:
    """A copy with the same shape, dtype, strides and values (``B``'s (1, K) view included)."""
    if t is None:
        return None
    return torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=t.device).copy_(t)


def _nbytes(t: Optional[Tensor]) -> int:
    # Elements, not storage: a view into a larger buffer is copied as just its elements.
    return 0 if t is None else t.numel() * t.element_size()


def rotating_inputs(A, B, scale_a, scale_b, bias, out_dtype, target_bytes: Optional[int] = None) -> list[tuple]:
    """Copies of the inputs (plus room for the output) that together exceed ``target_bytes``
    (default: the benchmarks' rule, :func:`hipbmm_inductor.timing.rotations`)."""
    out_bytes = A.shape[0] * B.shape[1] * out_dtype.itemsize
    one = sum(_nbytes(t) for t in (A, B, scale_a, scale_b, bias)) + out_bytes
    if target_bytes is None:
        target_bytes = timing.ROTATION_CACHE_MULTIPLE * timing.cache_bytes(A.device)
    if A.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(A.device)
        target_bytes = min(target_bytes, free // 4)  # never push a serving process towards OOM
    count = max(1, min(MAX_ROTATIONS, math.ceil(target_bytes / max(one, 1))))
    return [tuple(_clone_like(t) for t in (A, B, scale_a, scale_b, bias)) for _ in range(count)]


def outputs_agree(out: Tensor, ref: Tensor) -> Optional[str]:
    """``None`` when ``out`` matches ``ref`` as two correct configs would; else why not."""
    if not isinstance(out, Tensor):
        return f"returned {type(out).__name__}, not a Tensor"
    if out.shape != ref.shape or out.dtype != ref.dtype:
        return f"returned {tuple(out.shape)} {out.dtype}, expected {tuple(ref.shape)} {ref.dtype}"
    o, r = out.float(), ref.float()
    if not torch.equal(torch.isnan(o), torch.isnan(r)):
        return "NaN where the default has none (or the reverse)"
    o, r = torch.nan_to_num(o), torch.nan_to_num(r)
    # Two correct configs differ only in fp32 summation order before one bf16 rounding each:
    # 2^-8 relative per rounding (bf16 keeps 8 significant bits), so 2^-7 between two outputs,
    # doubled for order effects -> rtol 2^-6. The atol (2^-7 of the largest output) covers
    # elements that are small because of cancellation, whose rounding error is relative to the
    # magnitude of their partial sums rather than to the tiny result.
    atol = float(r.abs().max()) * 2.0**-7 if r.numel() else 0.0
    bad = (o - r).abs() > atol + 2.0**-6 * r.abs()
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        return f"{int(bad.sum())} element(s) differ from the default's output, first at {idx}: {float(o[idx])} vs {float(r[idx])}"
    return None


def _cuda_timer(fn: Callable[[int], object], reps: int) -> list:
    # Measure host time per call first: a small GEMM launches slower than it runs, and events
    # around a starved GPU would time the launcher, not the kernel.
    t0 = time.perf_counter()
    fn(0)
    host_s = time.perf_counter() - t0
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is not None:
        # NOTE: a spin kernel that keeps the GPU busy while the host queues every timed call, so
        # each event pair brackets back-to-back kernels (the regime of CUDA-graph replay, which
        # is how vLLM decodes). 2e9 cycles/s over-estimates every current GPU clock: the spin
        # lasts at least as long as the queueing, capped at 0.2 s.
        sleep(int(min(0.2, 1.5 * host_s * reps) * 2e9))
    for i in range(reps):
        starts[i].record()
        fn(i)
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)]


def _cuda_graph_timer(fn: Callable[[int], object], reps: int) -> list:
    """Per-call times from replaying a CUDA graph of back-to-back calls.

    NOTE: the benchmarks (and vLLM's decode) replay CUDA graphs. Event pairs around eager calls
    disagreed with graph replay by up to 8% on the H100 for configs that launch a different
    number of kernels (split-K adds a reduction kernel), enough to pick a config that replays
    2% slower than the default (a tuning run timed with event pairs). So
    candidates are timed the way they will run. Falls back to event timing where capture fails.
    """
    calls = max(1, min(reps, 20))  # calls per graph: amortises the replay's own launch
    try:
        # Warmed up off the capture first: Triton compiles on a config's first call.
        graph = timing.capture_graph(lambda: [fn(i) for i in range(calls)], warmup=1)
    except Exception as e:  # a launcher that cannot be captured: time it eagerly instead
        log.debug("tuning: CUDA-graph capture failed (%s); timing with events", e)
        torch.cuda.synchronize()
        return _cuda_timer(fn, reps)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(max(5, reps // calls)):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3 / calls)
    del graph
    return times


def _wall_timer(fn: Callable[[int], object], reps: int) -> list:
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return times


def default_timer(device: torch.device) -> Timer:
    return _cuda_graph_timer if device.type == "cuda" else _wall_timer


@dataclass
class Measurement:
    config: dict
    median_us: Optional[float] = None
    rejected: Optional[str] = None  # why, when it was


@dataclass
class TuneResult:
    config: dict
    time_us: float
    default_time_us: float
    measurements: list[Measurement] = field(default_factory=list)

    @property
    def benchmarked(self) -> int:
        return sum(m.median_us is not None for m in self.measurements)

    @property
    def rejected(self) -> int:
        return sum(m.rejected is not None for m in self.measurements)


class DefaultFailed(RuntimeError):
    """The default config itself raised: nothing can be validated against it."""


def _unique(default: dict, candidates: Sequence[dict], limit: Optional[int] = None) -> list[dict]:
    candidates = list(candidates)
    if limit is not None and len(candidates) > limit:
        # Evenly spaced over the backend's list, which is ordered by its own structure (block
        # sizes, stages): a budgeted search still covers every region of the space.
        candidates = [candidates[i * len(candidates) // limit] for i in range(limit)]
    seen, out = set(), []
    for c in [default, *candidates]:
        key = canonical_config(c)  # also rejects a non-dict candidate with a clear TypeError
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def tune_shape(
    A, B, scale_a, scale_b, bias, out_dtype, *,
    default: dict,
    candidates: Sequence[dict],
    run: Callable,
    timer: Optional[Timer] = None,
    settings: BenchSettings = DEFAULT_SETTINGS,
    rotations: Optional[list[tuple]] = None,
) -> TuneResult:
    """Validate and time ``default`` and ``candidates`` on this call's inputs; return the winner."""
    timer = timer or default_timer(A.device)
    configs = _unique(default, candidates, settings.max_candidates)
    try:
        reference = run(default, A, B, scale_a, scale_b, bias, out_dtype)
    except Exception as e:
        raise DefaultFailed(f"the default config {default} raised {type(e).__name__}: {e}") from e
    if rotations is None:
        rotations = rotating_inputs(A, B, scale_a, scale_b, bias, out_dtype, settings.rotate_bytes)
    n_rot = len(rotations)
    measurements = []
    for config in configs:
        m = Measurement(config)
        measurements.append(m)
        try:
            if config is not default:
                m.rejected = outputs_agree(run(config, A, B, scale_a, scale_b, bias, out_dtype), reference)
                if m.rejected:
                    log.debug("tuning: rejected %s: %s", config, m.rejected)
                    continue

            def call(i: int, config=config) -> object:
                a, b, sa, sb, bi = rotations[i % n_rot]
                return run(config, a, b, sa, sb, bi, out_dtype)

            warm = timer(call, settings.warmup_calls)
            estimate = statistics.median(warm) if warm else 0.0
            reps = settings.max_reps if estimate <= 0 else int(
                min(settings.max_reps, max(settings.min_reps, settings.time_budget_s / estimate)))
            m.median_us = statistics.median(timer(call, reps)) * 1e6
        except Exception as e:
            if config is default:
                raise DefaultFailed(f"timing the default config {default} raised {type(e).__name__}: {e}") from e
            m.rejected = f"raised {type(e).__name__}: {e}"
            log.debug("tuning: rejected %s: %s", config, m.rejected)
    default_us = measurements[0].median_us
    best = min((m for m in measurements if m.median_us is not None), key=lambda m: m.median_us)
    if best.config is not default and best.median_us > default_us * (1 - settings.noise_margin):
        best = measurements[0]
    return TuneResult(best.config, best.median_us, default_us, measurements)
