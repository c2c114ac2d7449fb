"""Per-shape config tuning for the ``hipb_mm_fp8`` backends, with a versioned on-disk cache.

Backends call :func:`resolve` (or :func:`choose`) on the first call of each GEMM shape and launch
with the config it returns; they do no file I/O or benchmarking of their own. Modes (``HIPBMM_TUNING``, read when the tuner is
first used and by :func:`reload`; at run time :func:`set_mode`):

- ``off``: always the backend's default (its heuristic).
- ``cache`` (default): the cached config for this shape, else the default. Never benchmarks.
  With ``HIPBMM_TUNING_RECORD=1`` untuned shapes are recorded for ``tune --from``.
- ``online``: on a miss, validate and time the backend's candidates now (see :mod:`.measure`),
  store the winner, use it. Never during CUDA-graph capture or ``torch.compile`` tracing: there
  the default runs and the shape is recorded to tune later.

Results live in ``HIPBMM_TUNING_CACHE`` (default ``$XDG_CACHE_HOME/hipbmm_inductor``), one CSV per
device architecture (:mod:`.store`), keyed by backend, device, library versions, dtypes, bias, N,
K and M bucket (:mod:`.key`). Counters: :func:`counters`. Offline: ``python -m hipbmm_inductor
tune`` and ``cache`` (:mod:`hipbmm_inductor.cli.tune`, :mod:`hipbmm_inductor.cli.cache`); ``docs/tuning.md`` has the workflow.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor

from hipbmm_inductor import envs

from .measure import DEFAULT_SETTINGS, BenchSettings
from .tuner import COUNTER_NAMES, Tuner

__all__ = [
    "choose",
    "resolve",
    "set_mode",
    "get_mode",
    "set_cache_dir",
    "cache_dir",
    "set_record",
    "counters",
    "reset_counters",
    "reload",
    "set_timer",
    "set_bench_settings",
    "BenchSettings",
    "forcing",
    "tuner",
    "COUNTER_NAMES",
]

_tuner: Optional[Tuner] = None
_tuner_lock = threading.Lock()


def tuner() -> Tuner:
    """The process's tuning state for the configured cache folder (created on first use)."""
    global _tuner
    t = _tuner
    if t is None:
        with _tuner_lock:
            if _tuner is None:
                _tuner = Tuner(envs.HIPBMM_TUNING_CACHE, envs.HIPBMM_TUNING)
            t = _tuner
    return t


def resolve(
    backend: str,
    A: Tensor,
    B: Tensor,
    scale_a: Tensor,
    scale_b: Tensor,
    bias: Optional[Tensor],
    out_dtype: torch.dtype,
    *,
    default: dict,
    candidates: Callable[[], Sequence[dict]],
    run: Callable[[dict, Tensor, Tensor, Tensor, Tensor, Optional[Tensor], torch.dtype], Tensor],
    extra_key: str = "",
) -> tuple[dict, bool]:
    """The config ``backend`` should launch this GEMM with, and whether that answer is final.

    Args:
        backend: the backend's registry name (part of the key).
        A, B, scale_a, scale_b, bias, out_dtype: the call's validated arguments.
        default: the backend's heuristic config (JSON-serialisable dict); the answer when
            tuning is off, on a cache miss, and the numerical reference for candidates.
        candidates: called only when tuning; the configs to try (the default may be among them).
        run: ``run(config, A, B, scale_a, scale_b, bias, out_dtype) -> out``: the backend's
            launcher with an explicit config.
        extra_key: anything else the best config depends on (e.g. a kernel variant).

    Returns:
        ``(config, final)``: ``default`` or a cached/tuned config (treat it as read-only: the
        cache hands out the same dict on every hit), and ``final`` = the same key will get the
        same answer until the tuning state changes (mode, folder, ``forcing``). It is False only
        where ``online`` mode handed out the default because tuning had to wait (CUDA-graph
        capture, ``torch.compile`` tracing): a backend that caches answers per shape must ask
        again next time.
    """
    return (_tuner or tuner()).resolve(backend, A, B, scale_a, scale_b, bias, out_dtype, default, candidates,
                                       run, extra_key)


def choose(backend: str, A: Tensor, B: Tensor, scale_a: Tensor, scale_b: Tensor, bias: Optional[Tensor],
           out_dtype: torch.dtype, *, default: dict, candidates: Callable[[], Sequence[dict]],
           run: Callable, extra_key: str = "") -> dict:
    """:func:`resolve`'s config alone."""
    return (_tuner or tuner()).resolve(backend, A, B, scale_a, scale_b, bias, out_dtype, default, candidates,
                                       run, extra_key)[0]


def set_mode(mode: Optional[str]) -> None:
    """Python equivalent of ``HIPBMM_TUNING``: ``"off"``, ``"cache"``, ``"online"``, or ``None``
    to go back to the environment."""
    if mode is not None:
        mode = str(mode).lower()
        if mode not in envs.TUNING_MODES:
            raise ValueError(f"set_mode: mode must be one of {', '.join(envs.TUNING_MODES)}, got {mode!r}")
    envs.set_override("HIPBMM_TUNING", mode)
    tuner().mode = envs.HIPBMM_TUNING


def get_mode() -> str:
    """The mode ``choose`` uses now."""
    return tuner().mode


def set_cache_dir(path: Optional[str]) -> None:
    """Python equivalent of ``HIPBMM_TUNING_CACHE`` (``None``: back to the environment/default).

    The in-memory tables are dropped; the next call loads from the new folder.
    """
    envs.set_override("HIPBMM_TUNING_CACHE", None if path is None else str(path))
    reload()


def cache_dir() -> str:
    return tuner().store.folder


def set_record(enabled: Optional[bool]) -> None:
    """Python equivalent of ``HIPBMM_TUNING_RECORD`` (``None``: back to the environment)."""
    envs.set_override("HIPBMM_TUNING_RECORD", None if enabled is None else bool(enabled))


def counters() -> dict[str, int]:
    """What the tuner did in this process: ``hits``, ``misses``, ``tuned``, ``benchmarked_configs``,
    ``rejected_configs``, ``skipped_unsafe``, ``failed``, ``recorded``."""
    return dict(tuner().counters)


def reset_counters() -> None:
    c = tuner().counters
    for name in list(c):
        c[name] = 0


def reload() -> None:
    """Forget in-memory tables (and the folder): the next call reads the cache folder again.

    Counters, the timer, bench settings and the set of cached configs already reported unusable
    survive; environment settings are re-read.
    """
    global _tuner
    with _tuner_lock:
        old, _tuner = _tuner, None
    if old is not None:
        new = tuner()
        new.counters = old.counters
        new.timer = old.timer
        new.settings = old.settings
        new._rejected_rows = old._rejected_rows  # an unusable cached config is warned about once per process


def set_timer(timer) -> None:
    """Replace the benchmark timer (``Timer(fn, reps) -> per-call seconds``); ``None``: default.

    For tests and benchmarks that need deterministic or custom timing.
    """
    tuner().timer = timer


def set_bench_settings(settings: Optional[BenchSettings]) -> None:
    """How much to measure per candidate (warm-up, repetitions, rotating bytes, noise margin);
    ``None``: the defaults."""
    tuner().settings = settings or DEFAULT_SETTINGS


@contextmanager
def forcing() -> Iterator[None]:
    """Within the block, ``online`` mode re-tunes shapes that are already cached (once each)."""
    t = tuner()
    t.force, t._forced_done = True, set()
    try:
        yield
    finally:
        t.force = False
