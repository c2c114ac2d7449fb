"""The tuning cache on disk: one human-readable CSV per device architecture.

File ``<cache dir>/tuning-<arch>.csv``::

    # hipbmm_inductor tuning cache, format 1. One row per tuned GEMM; rows carry their own versions.
    # arch=gfx942
    # written_by=hipbmm_inductor=0.1.0;torch=2.11.0;triton=3.6.0;hip=6.4;hipblaslt=1.0.60400
    backend,arch,device_name,versions,a_dtype,b_dtype,out_dtype,bias,n,k,m_bucket,extra,config,time_us,default_time_us,measured_at
    triton,gfx942,AMD Instinct MI300X,hipbmm_inductor=0.1.0;...,float8_e4m3fnuz,...,"{""BLOCK_M"": 64, ...}",11.2,13.9,2026-11-24T03:30:05Z

Rules, each answering a weak point of aiter's ``hip_online_tuning_res.csv`` (docs/contract.md, "aiter online tuning"):

- Rows measured under other library versions stay in the file (a rollback finds them again) but
  are not used; the ``written_by`` header line says which versions wrote the file last.
- Every write is read-merge-write under one file lock (``<file>.lock``, via ``filelock``), taken by
  tuning processes, ``cache import`` and ``cache clear`` alike, into a temporary file in the same
  folder, fsynced, then ``os.replace``d over the old one: readers see the old or the new file, never
  half of one, and concurrent writers each keep the other's rows. The lock file is never deleted
  (a process waiting on it would otherwise lock a file nobody else sees).
- Writes follow a symlinked cache file (the link stays a link) and keep the file's mode and, where
  allowed, its owner; a new file gets the process's umask, as any other file would.
- Two rows with the same key: the one measured last (``measured_at``) wins, the later one in the
  file or the one being written on a tie. Every row this drops, and every line that cannot be read,
  is appended, with a ``#`` comment saying why, to ``<file>.rejected`` on the next rewrite: nothing
  in the file is ever silently dropped. A damaged file gives one warning per load.
- ``cache clear`` empties a file and marks it ``# cleared_at=<time>``: rows measured before that
  time (or in its second), held in memory by a process that was running, are not written back
  (they go to ``.rejected``). ``cache clear --stale`` moves the rows it drops to ``.rejected``.
- A folder that cannot be written gives one warning and the process keeps its results in memory;
  rows that could not be written are retried on every later write, until one succeeds.
- A temporary file left by a killed writer is deleted by the next write of the same file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from .files import file_lock, write_atomically
from .key import safe_arch
from .rows import LoadResult, Row, newer, now_utc, read_rows, render, row_line

__all__ = ["Store", "WriteReport"]

log = logging.getLogger("hipbmm_inductor")


class NewerFormat(RuntimeError):
    """A cache file written by a later release, in a format this one reads but does not write."""


@dataclass
class WriteReport:
    """What one locked rewrite did (``Store.upsert``, ``merge``, ``rewrite``, ``clear``)."""

    written: bool = False
    rows: int = 0  # rows in the file afterwards
    added: int = 0  # keys that were not in the file
    replaced: int = 0  # rows of the file replaced by newer ones
    kept_newer: int = 0  # incoming rows dropped: the file's row for the key was measured later
    dropped: int = 0  # rows removed by a filter (clear --stale, clear, the cleared_at mark)


class Store:
    """The tuning files of one cache folder, with one-warning fault handling.

    Not a module global: :mod:`hipbmm_inductor.tuning` holds one instance per configured folder
    and replaces it when the folder changes.
    """

    def __init__(self, folder: str):
        self.folder = os.path.abspath(os.path.expanduser(folder))
        # True while this process's last write failed: its rows are then in memory only, and
        # every later write tries to bring them to disk again.
        self.memory_only = False
        self._pending: dict[str, dict[tuple, Row]] = {}  # arch -> rows not yet on disk
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def folder_problem(self) -> Optional[str]:
        """Why this folder cannot hold the cache, or ``None``: a path that exists and is not a folder
        (every tuned result would stay in memory and every read would find nothing)."""
        if os.path.exists(self.folder) and not os.path.isdir(self.folder):
            return f"{self.folder} is a file, not a folder"
        return None

    def path(self, arch: str) -> str:
        return os.path.join(self.folder, f"tuning-{safe_arch(arch)}.csv")

    def _warn_once(self, what: str, key: str, message: str, *args) -> None:
        if (what, key) not in self._warned:
            self._warned.add((what, key))
            log.warning(message, *args)

    def _report(self, path: str, loaded: LoadResult) -> None:
        if loaded.problems:
            self._warn_once(
                "damaged", path,
                "hipbmm_inductor tuning cache %s has %s: skipped %d unreadable line(s), kept %d row(s); "
                "the lines not kept are moved to %s.rejected on the next write",
                path, ", ".join(loaded.problems), len(loaded.bad_lines), len(loaded.rows), path,
            )

    def load(self, arch: str) -> list[Row]:
        """All valid rows for ``arch`` (every version), plus rows this process could not write yet."""
        path = self.path(arch)
        try:
            loaded = read_rows(path)
        except OSError as e:
            self._warn_once("unreadable", path, "hipbmm_inductor tuning cache %s cannot be read (%s); "
                            "starting from an empty cache", path, e)
            loaded = LoadResult()
        self._report(path, loaded)
        rows = {r.key(): r for r in loaded.rows}
        for key, row in self._pending.get(arch, {}).items():
            if key not in rows or newer(row, rows[key]):
                rows[key] = row
        return list(rows.values())

    # -- writes: one locked read-modify-write ----------------------------------------------
    def _rewrite(self, arch: str, written_by: str,
                 change: Callable[[LoadResult, WriteReport, list[tuple[str, str]]], dict[tuple, Row]]) -> WriteReport:
        """Under the file lock: read ``arch``'s file, let ``change`` compute the new rows, log what
        leaves the file in ``.rejected``, write. Raises on failure."""
        path = self.path(arch)
        report = WriteReport()
        os.makedirs(self.folder, exist_ok=True)
        real = os.path.realpath(path)
        with file_lock(real) as locked:
            loaded = read_rows(real)
            self._report(path, loaded)
            if loaded.newer_format:
                raise NewerFormat(f"{path} is in format {loaded.newer_format}, which this release does not write: "
                                  f"left as it is (use a cache folder of its own for this release)")
            removed: list[tuple[str, str]] = [(line, "unreadable line") for line in loaded.bad_lines]
            removed += [(line, f"duplicate key: kept the row measured at {kept.measured_at}")
                        for line, kept in loaded.duplicates]
            rows = change(loaded, report, removed)
            if removed:
                stamp = now_utc()
                with open(real + ".rejected", "a", encoding="utf-8", newline="") as f:
                    f.write("".join(f"# {stamp} {why}\n{line}\n" for line, why in removed))
                    f.flush()
                    os.fsync(f.fileno())
            write_atomically(real, render(rows.values(), arch, written_by, loaded.cleared_at), locked=locked)
            report.rows = len(rows)
        report.written = True
        return report

    @staticmethod
    def _merge(rows: dict[tuple, Row], incoming: Iterable[Row], report: WriteReport,
               removed: list[tuple[str, str]], source: str) -> None:
        for row in incoming:
            old = rows.get(row.key())
            if old == row:
                continue  # the same row again (a retried write that had reached the disk)
            if old is None:
                report.added += 1
            elif newer(row, old):
                report.replaced += 1
                removed.append((row_line(old), f"replaced by a row measured at {row.measured_at} ({source})"))
            else:
                report.kept_newer += 1
                removed.append((row_line(row), f"not written ({source}): the file's row was measured later, at "
                                            f"{old.measured_at}"))
                continue
            rows[row.key()] = row

    def upsert(self, arch: str, new_rows: Iterable[Row], written_by: str) -> bool:
        """Insert or replace rows (by key, the duplicate rule) in ``arch``'s file, with every row
        an earlier write could not store; ``False`` if they stay in memory only (retried later)."""
        with self._lock:
            pending = self._pending.setdefault(arch, {})
            for row in new_rows:
                if row.key() not in pending or newer(row, pending[row.key()]):
                    pending[row.key()] = row

            def change(loaded: LoadResult, report: WriteReport, removed: list) -> dict:
                rows = {r.key(): r for r in loaded.rows}
                incoming = []
                for row in pending.values():
                    # <=: both stamps have one-second resolution, so a row of the clear's own
                    # second may have been measured before it; it is dropped (and re-tuned) rather
                    # than written back over the clear.
                    if loaded.cleared_at and row.measured_at <= loaded.cleared_at:
                        report.dropped += 1  # measured before a `cache clear`: do not undo it
                        removed.append((row_line(row), f"not written: measured before the cache was cleared "
                                                    f"at {loaded.cleared_at}"))
                    else:
                        incoming.append(row)
                self._merge(rows, incoming, report, removed, "a tuning process")
                return rows

            try:
                self._rewrite(arch, written_by, change)
            except NewerFormat as e:  # a later release's file: never rewritten, so no folder advice
                self.memory_only = True
                self._warn_once("newer-format", self.path(arch),
                                "hipbmm_inductor tuning cache: %s; tuned results are kept in memory", e)
                return False
            except Exception as e:  # OSError, filelock.Timeout: keep going in memory, retry later
                self.memory_only = True
                self._warn_once(
                    "unwritable", self.folder,
                    "hipbmm_inductor tuning cache folder %s cannot be written (%s: %s); tuned results "
                    "are kept in memory and written by the next write that succeeds (set "
                    "HIPBMM_TUNING_CACHE to a writable folder)",
                    self.folder, type(e).__name__, e,
                )
                return False
            if self.memory_only:
                log.warning("hipbmm_inductor tuning cache folder %s is writable again: wrote the %d row(s) "
                            "kept in memory", self.folder, len(pending))
                self.memory_only = False
                self._warned.discard(("unwritable", self.folder))  # a new failure warns again
            pending.clear()
            return True

    def merge(self, arch: str, rows: Iterable[Row], written_by: str, source: str) -> WriteReport:
        """``cache import``: merge ``rows`` by the duplicate rule; raises if the file cannot be written."""
        rows = list(rows)

        def change(loaded: LoadResult, report: WriteReport, removed: list) -> dict:
            current = {r.key(): r for r in loaded.rows}
            self._merge(current, rows, report, removed, source)
            return current

        with self._lock:
            return self._rewrite(arch, written_by, change)

    def rewrite(self, arch: str, keep: Callable[[Row], bool], written_by: str, why: str) -> WriteReport:
        """Keep only the rows ``keep`` accepts (``cache clear --stale``); the others go to ``.rejected``."""

        def change(loaded: LoadResult, report: WriteReport, removed: list) -> dict:
            rows = {}
            for r in loaded.rows:
                if keep(r):
                    rows[r.key()] = r
                else:
                    report.dropped += 1
                    removed.append((row_line(r), why))  # kept in .rejected: `cache import` brings it back
            return rows

        with self._lock:
            return self._rewrite(arch, written_by, change)

    def clear(self, arch: str, written_by: str) -> WriteReport:
        """``cache clear``: empty ``arch``'s file under the writers' lock and mark it ``cleared_at``.

        The file stays (empty but for its header and the mark) so that a process that was running
        does not write rows it measured before the clear back into it.

        Returns once the clock has left the mark's second (at most a second later): stamps have
        one-second resolution and a row of the mark's own second is dropped as possibly older, so a
        row this process measures after the clear returns is stamped later and kept.
        """
        stamp = now_utc()

        def change(loaded: LoadResult, report: WriteReport, removed: list) -> dict:
            report.dropped = len(loaded.rows)
            loaded.cleared_at = stamp
            # Rows this process could not write yet are cleared too, but recorded.
            removed.extend((row_line(r), "cleared before it reached the file")
                           for r in self._pending.get(arch, {}).values())
            return {}

        with self._lock:
            report = self._rewrite(arch, written_by, change)
            self._pending.pop(arch, None)
        while now_utc() <= stamp:
            time.sleep(0.02)
        return report

    def files(self) -> list[tuple[str, str]]:
        """``(arch, path)`` of every tuning file in the folder."""
        try:
            names = sorted(os.listdir(self.folder))
        except OSError:
            return []
        out = []
        for name in names:
            if name.startswith("tuning-") and name.endswith(".csv"):
                out.append((name[len("tuning-"):-len(".csv")], os.path.join(self.folder, name)))
        return out
