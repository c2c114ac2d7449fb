"""The in-memory side of the tuner: per-device lookup tables, counters, and tune-on-miss.

:class:`Tuner` answers :func:`hipbmm_inductor.tuning.choose`. Per device it loads the matching
rows of the architecture's CSV once (same device name, same library versions) into a dict keyed
by ``(backend, extra, A dtype, B dtype, out dtype, bias dtype, N, K, M bucket)``; after that a
call is one tuple build and one dict lookup. Misses go to
the cache-only path (return the default, optionally record the shape) or to online tuning.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Callable, Optional, Sequence

import torch

from hipbmm_inductor import envs

from . import measure
from .config_check import config_problem
from .key import DeviceInfo, device_info, dtype_name, m_bucket, parse_dtype
from .untuned import append_untuned, make_untuned, untuned_path
from .rows import Row, canonical_config, now_utc
from .store import Store

__all__ = ["Tuner", "COUNTER_NAMES"]

log = logging.getLogger("hipbmm_inductor")

COUNTER_NAMES = (
    "hits",  # calls answered from the cache
    "misses",  # calls with no cached config (cache mode: the default ran)
    "tuned",  # shapes tuned in this process
    "benchmarked_configs",  # configs timed while tuning
    "rejected_configs",  # candidates that raised or disagreed with the default
    "skipped_unsafe",  # online misses not tuned: CUDA-graph capture or torch.compile tracing
    "failed",  # shapes whose default config raised while tuning (left untuned)
    "recorded",  # shapes written to the untuned-shapes file
)


class Tuner:
    """All tuning state of one process for one cache folder (replaced when the folder changes)."""

    def __init__(self, folder: str, mode: str):
        # NOTE: the mode is a snapshot, not an envs read per call: reading HIPBMM_TUNING through
        # envs costs 0.5-3 us (os.environ decoding), more than the whole cache hit. set_mode()
        # updates it at once; a changed environment is picked up by tuning.reload().
        self.mode = mode
        self.store = Store(folder)
        self.counters: Counter = Counter({name: 0 for name in COUNTER_NAMES})
        self.timer: Optional[measure.Timer] = None  # None: CUDA-graph replay on GPUs, wall clock on CPUs
        self.settings: measure.BenchSettings = measure.DEFAULT_SETTINGS
        self.force = False  # `tune --force`: re-tune keys that are already cached
        self._forced_done: set[tuple] = set()
        self._tables: dict[torch.device, dict[tuple, dict]] = {}
        self._seen: set[tuple] = set()  # keys already considered for recording
        self._failed: set[tuple] = set()
        self._lock = threading.RLock()
        self._record_warned = False
        self._rejected_rows: set[tuple] = set()  # (key, config) of cached rows already reported unusable

    # -- lookups --------------------------------------------------------------------------
    def table(self, device: torch.device) -> dict[tuple, dict]:
        table = self._tables.get(device)
        if table is None:
            with self._lock:
                table = self._tables.get(device)
                if table is None:
                    table = self._tables[device] = self._load(device_info(device))
        return table

    def _load(self, info: DeviceInfo) -> dict[tuple, dict]:
        table: dict[tuple, dict] = {}
        rejected = []
        for row in self.store.load(info.arch):
            if (row.arch, row.device_name, row.versions) != (info.arch, info.name, info.versions):
                continue  # kept in the file, not used here
            try:
                dtypes = [parse_dtype(row.a_dtype), parse_dtype(row.b_dtype), parse_dtype(row.out_dtype),
                          parse_dtype(row.bias)]
            except ValueError:
                continue  # a dtype this torch does not have: the row cannot match any call here
            # Checked once per load, never per call: a config the backend cannot launch (edited by
            # hand, or from a kernel whose rules changed) is skipped and the heuristic runs.
            problem, _ = config_problem(row)
            if problem is not None:
                rejected.append((row, problem))
                continue
            key = (row.backend, row.extra, *dtypes, row.n, row.k, row.m_bucket)
            table[key] = row.config_dict()
        new = [(row, problem) for row, problem in rejected if (row.key(), row.config) not in self._rejected_rows]
        if new:
            self._rejected_rows.update((row.key(), row.config) for row, _ in new)
            row, problem = new[0]
            log.warning(
                "hipbmm_inductor tuning cache %s: ignoring %d cached config(s) their backend cannot launch; "
                "those shapes run the backend's heuristic (first: %s N=%d K=%d M<=%d %s: %s)",
                self.store.path(info.arch), len(new), row.backend, row.n, row.k, row.m_bucket, row.config, problem,
            )
        log.debug("hipbmm_inductor tuning: %d cached config(s) for %s (%s)", len(table), info.name, info.arch)
        return table

    def resolve(self, backend: str, A, B, scale_a, scale_b, bias, out_dtype, default: dict,
                candidates: Callable[[], Sequence[dict]], run: Callable, extra_key: str) -> tuple[dict, bool]:
        """``(config, final)``: see :func:`hipbmm_inductor.tuning.resolve`."""
        mode = self.mode
        if mode == "off":
            return default, True
        table = self._tables.get(A.device)
        if table is None:
            table = self.table(A.device)
        M, K = A.shape
        # The lookup key: what a cached row is keyed by (backends ask once per launch plan).
        key = (backend, extra_key, A.dtype, B.dtype, out_dtype, None if bias is None else bias.dtype,
               B.shape[1], K, m_bucket(M))
        config = table.get(key)
        if config is not None and not (self.force and key not in self._forced_done):
            self.counters["hits"] += 1
            return config, True
        if mode != "online":
            self.counters["misses"] += 1
            if key not in self._seen:
                # Read before the key is marked seen: a bad HIPBMM_TUNING_RECORD raises on every
                # call of the shape, not only on the first.
                record = envs.HIPBMM_TUNING_RECORD
                self._seen.add(key)
                if record:
                    self._record(key, A, "untuned in cache mode")
            return default, True
        return self._tune(key, table, A, B, scale_a, scale_b, bias, out_dtype, default, candidates, run)

    # -- misses ---------------------------------------------------------------------------
    def _record(self, key: tuple, A, reason: str) -> None:
        backend, extra, a_dtype, b_dtype, out_dtype, bias_dtype, n, k, _ = key
        info = device_info(A.device)
        shape = make_untuned(backend, info, dtype_name(a_dtype), dtype_name(b_dtype), dtype_name(out_dtype),
                             dtype_name(bias_dtype), int(A.shape[0]), n, k, extra, reason)
        try:
            append_untuned(untuned_path(self.store.folder, info.arch), shape)
            self.counters["recorded"] += 1
        except Exception as e:
            if not self._record_warned:
                self._record_warned = True
                log.warning("hipbmm_inductor tuning: cannot record untuned shapes in %s (%s: %s)",
                            self.store.folder, type(e).__name__, e)

    def _tune(self, key, table, A, B, scale_a, scale_b, bias, out_dtype, default, candidates,
              run) -> tuple[dict, bool]:
        reason = measure.unsafe_to_benchmark(A)
        if reason is not None:
            self.counters["skipped_unsafe"] += 1
            if key not in self._seen:  # tune it later: from the next safe call, or `tune --from`
                self._seen.add(key)
                self._record(key, A, f"online tuning skipped: {reason}")
            return default, False
        if key in self._failed:
            self.counters["misses"] += 1
            return default, True
        if not isinstance(default, dict):  # a backend bug, not a tuning failure: say so loudly
            raise TypeError(f"tuning.choose: default must be a config dict, got {type(default).__name__}")
        with self._lock:
            config = table.get(key)
            if config is not None and not (self.force and key not in self._forced_done):
                self.counters["hits"] += 1
                return config, True
            info = device_info(A.device)
            # Another process (a tensor-parallel rank, a `tune` run) may have tuned this shape
            # since our table was loaded: one file read is cheap next to a search.
            fresh = self._load(info)
            if key in fresh and not self.force:
                table.update(fresh)
                self.counters["hits"] += 1
                return table[key], True
            shape = f"{key[0]} M={A.shape[0]} (bucket {key[-1]}) N={key[6]} K={key[7]} bias={dtype_name(key[5])}"
            try:
                result = measure.tune_shape(A, B, scale_a, scale_b, bias, out_dtype, default=default,
                                          candidates=list(candidates()), run=run, timer=self.timer,
                                          settings=self.settings)
            except Exception as e:  # DefaultFailed, or candidates() itself raised
                self._failed.add(key)
                self.counters["failed"] += 1
                log.warning("hipbmm_inductor tuning: left %s untuned: %s: %s", shape, type(e).__name__, e)
                return default, True
            self.counters["tuned"] += 1
            self.counters["benchmarked_configs"] += result.benchmarked
            self.counters["rejected_configs"] += result.rejected
            table[key] = result.config
            self._forced_done.add(key)
            row = Row(
                backend=key[0], arch=info.arch, device_name=info.name, versions=info.versions,
                a_dtype=dtype_name(key[2]), b_dtype=dtype_name(key[3]), out_dtype=dtype_name(key[4]),
                bias=dtype_name(key[5]), n=key[6], k=key[7], m_bucket=key[8], extra=key[1],
                config=canonical_config(result.config), time_us=result.time_us,
                default_time_us=result.default_time_us, measured_at=now_utc(),
            )
            self.store.upsert(info.arch, [row], info.versions)
            log.info("hipbmm_inductor tuning: %s -> %s (%.2f us, default %.2f us; %d timed, %d rejected)",
                     shape, row.config, result.time_us, result.default_time_us, result.benchmarked,
                     result.rejected)
            return result.config, True
