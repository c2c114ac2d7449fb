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
  time, held in memory by a process that was running, are not written back (they go to
  ``.rejected``).
- A folder that cannot be written gives one warning and the process keeps its results in memory;
  rows that could not be written are retried on every later write, until one succeeds.
- A temporary file left by a killed writer is deleted by the next write of the same file.
"""

from __future__ import annotations

import csv
import datetime as _dt
import glob
import io
import json
import logging
import math
import os
import secrets
import socket
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from .key import safe_arch

__all__ = [
    "COLUMNS",
    "Row",
    "LoadResult",
    "read_rows",
    "Store",
    "file_lock",
    "write_atomically",
    "canonical_config",
    "now_utc",
    "newer",
]

log = logging.getLogger("hipbmm_inductor")

FORMAT_LINE = "# hipbmm_inductor tuning cache, format 1. One row per tuned GEMM; rows carry their own versions."
COLUMNS = (
    "backend", "arch", "device_name", "versions", "a_dtype", "b_dtype", "out_dtype", "bias",
    "n", "k", "m_bucket", "extra", "config", "time_us", "default_time_us", "measured_at",
)
HEADER = ",".join(COLUMNS)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime(_TIME_FORMAT)


def canonical_config(config: dict) -> str:
    """The one JSON spelling of a config (sorted keys), used for storage and de-duplication."""
    if not isinstance(config, dict):
        raise TypeError(f"a tuning config must be a dict, got {type(config).__name__}")
    return json.dumps(config, sort_keys=True, separators=(", ", ": "))


@dataclass(frozen=True)
class Row:
    backend: str
    arch: str
    device_name: str
    versions: str
    a_dtype: str
    b_dtype: str
    out_dtype: str
    bias: str
    n: int
    k: int
    m_bucket: int
    extra: str
    config: str  # canonical JSON
    time_us: float
    default_time_us: float
    measured_at: str

    def key(self) -> tuple:
        """Upsert key: everything but the measured value."""
        return (self.backend, self.arch, self.device_name, self.versions, self.a_dtype, self.b_dtype,
                self.out_dtype, self.bias, self.n, self.k, self.m_bucket, self.extra)

    def config_dict(self) -> dict:
        return json.loads(self.config)

    def to_fields(self) -> list[str]:
        return [
            self.backend, self.arch, self.device_name, self.versions, self.a_dtype, self.b_dtype,
            self.out_dtype, self.bias, str(self.n), str(self.k), str(self.m_bucket), self.extra,
            self.config, f"{self.time_us:.3f}", f"{self.default_time_us:.3f}", self.measured_at,
        ]

    @classmethod
    def from_fields(cls, fields: list[str]) -> "Row":
        """Parse and validate one CSV record; ``ValueError`` says what is wrong with it."""
        if len(fields) != len(COLUMNS):
            raise ValueError(f"expected {len(COLUMNS)} fields, got {len(fields)}")
        d = dict(zip(COLUMNS, fields))
        for name in ("backend", "arch", "device_name", "versions", "a_dtype", "b_dtype", "out_dtype", "bias"):
            if not d[name].strip():
                raise ValueError(f"empty {name}")
        ints = {}
        for name in ("n", "k", "m_bucket"):
            ints[name] = int(d[name])
            if ints[name] <= 0:
                raise ValueError(f"{name}={ints[name]} is not positive")
        if ints["m_bucket"] & (ints["m_bucket"] - 1):
            raise ValueError(f"m_bucket={ints['m_bucket']} is not a power of two")
        config = json.loads(d["config"])
        if not isinstance(config, dict):
            raise ValueError("config is not a JSON object")
        times = {}
        for name in ("time_us", "default_time_us"):
            times[name] = float(d[name])
            if not math.isfinite(times[name]) or times[name] < 0:
                raise ValueError(f"{name}={d[name]!r} is not a finite non-negative number")
        _dt.datetime.strptime(d["measured_at"], _TIME_FORMAT)  # a truncated timestamp fails here
        return cls(
            backend=d["backend"], arch=d["arch"], device_name=d["device_name"], versions=d["versions"],
            a_dtype=d["a_dtype"], b_dtype=d["b_dtype"], out_dtype=d["out_dtype"], bias=d["bias"],
            extra=d["extra"], config=canonical_config(config), measured_at=d["measured_at"],
            **ints, **times,
        )


def newer(a: Row, b: Row) -> bool:
    """The duplicate rule: whether ``a`` replaces ``b`` (same key): measured later, or at the same
    second (``a`` is then the later one in the file, or the one being written)."""
    return a.measured_at >= b.measured_at


@dataclass
class LoadResult:
    rows: list[Row] = field(default_factory=list)  # one per key (the duplicate rule applied)
    bad_lines: list[str] = field(default_factory=list)  # raw text of every line that did not parse
    duplicates: list[tuple[str, Row]] = field(default_factory=list)  # (raw line dropped, the row kept)
    problems: list[str] = field(default_factory=list)  # one phrase per kind of damage
    cleared_at: str = ""  # the "# cleared_at=" mark of `cache clear`, if any


_CLEARED = "# cleared_at="


def read_rows(path: str) -> LoadResult:
    """Every valid row of a tuning CSV, plus the raw lines that are not (never raises for content)."""
    result = LoadResult()
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):  # no file yet (or no folder): an empty cache
        return result
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # Not "\ufffd in text": U+FFFD is a valid character a device name may hold (found by
        # test_rows_round_trip); only a failed strict decode means damaged bytes.
        text = raw.decode("utf-8", errors="replace")
        result.problems.append("bytes that are not UTF-8")
    if text and not text.endswith("\n"):
        # Our writer always ends with a newline: a missing one means the file was cut short.
        result.problems.append("a truncated last line")
    # split("\n"), not splitlines(): the latter also breaks at \x1c-\x1e, \x85 and \u2028, which
    # may appear inside a quoted device name or config (found by test_rows_round_trip).
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    for ln in lines:
        if ln.startswith(_CLEARED):
            result.cleared_at = max(result.cleared_at, ln[len(_CLEARED):].strip())
    lines = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    if lines and lines[0].strip() == HEADER:
        lines = lines[1:]
    elif lines:
        result.problems.append("a missing or unexpected column header")
    by_key: dict[tuple, tuple[Row, str]] = {}
    for line in lines:
        try:
            records = list(csv.reader([line]))
            if len(records) != 1:
                raise ValueError("not one CSV record")
            row = Row.from_fields(records[0])
        except (ValueError, csv.Error) as e:  # json.JSONDecodeError is a ValueError
            result.bad_lines.append(line)
            if "garbage rows" not in result.problems:
                result.problems.append("garbage rows")
            log.debug("tuning cache %s: skipped line %r (%s)", path, line[:120], e)
            continue
        seen = by_key.get(row.key())
        if seen is None:
            by_key[row.key()] = (row, line)
        elif newer(row, seen[0]):
            result.duplicates.append((seen[1], row))
            by_key[row.key()] = (row, line)
        else:
            result.duplicates.append((line, seen[0]))
    if result.duplicates:
        result.problems.append(f"{len(result.duplicates)} duplicated key(s) (the row measured last is kept)")
    result.rows = [row for row, _ in by_key.values()]
    return result


def render(rows: Iterable[Row], arch: str, written_by: str, cleared_at: str = "") -> str:
    out = io.StringIO()
    out.write(f"{FORMAT_LINE}\n# arch={arch}\n# written_by={written_by}\n")
    if cleared_at:
        out.write(f"{_CLEARED}{cleared_at}\n")
    out.write(f"{HEADER}\n")
    writer = csv.writer(out, lineterminator="\n")
    for row in sorted(rows, key=lambda r: tuple(str(x) for x in r.key())):
        writer.writerow(row.to_fields())
    return out.getvalue()


_filelock_warning = {"given": False}  # one warning per process


def _warn_filelock_missing_once() -> None:
    if not _filelock_warning["given"]:
        _filelock_warning["given"] = True
        log.warning(
            "hipbmm_inductor tuning: the 'filelock' package is not installed (pip install filelock, "
            "or from the checkout pip install -e '.[tune]'); writing the tuning cache without a lock, so processes writing "
            "the same file at the same moment may drop each other's new rows"
        )


def _umask() -> int:
    """The process's umask (only filelock releases before 4 need it, to create the lock file)."""
    try:  # Linux: readable without changing it
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # os.umask sets as it reads: put it straight back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_umask_lock = threading.Lock()


@contextmanager
def file_lock(path: str, timeout: float = 60.0) -> Iterator[bool]:
    """Exclusive lock on ``path`` across processes (``<path>.lock``, never deleted), via the filelock
    package; yields ``False`` when filelock is missing and nothing is locked."""
    try:
        import filelock
    except ImportError:
        _warn_filelock_missing_once()
        yield False
        return
    # NOTE: filelock's FileLock is fcntl/msvcrt-based on local disks and degrades to a soft
    # (lock-file existence) lock on file systems without fcntl; both are released by the OS or
    # by the timeout if a holder crashes. filelock >= 4 creates the lock file under the umask when
    # no mode is given; earlier releases chmod it to their default 0o644, which locks out the
    # other users of a shared folder, so those get the umask's mode explicitly.
    kwargs = {}
    if int(filelock.__version__.split(".")[0]) < 4:
        kwargs["mode"] = (0o666 & ~_umask()) | 0o600
    with filelock.FileLock(path + ".lock", timeout=timeout, **kwargs):
        yield True


_HOST = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:64] or "host"


def _tmp_path(real: str) -> str:
    # Host and pid in the name: a writer without the lock (an export) can tell a dead writer's
    # leftover from a live one's file.
    return f"{real}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def _remove_orphans(real: str, locked: bool) -> None:
    """Delete temporary files of ``real`` left by killed writers.

    Under the file's lock no other writer of it is mid-write, so every one is an orphan; without
    the lock (exports, no filelock) only those of dead processes on this host are.
    """
    for tmp in glob.glob(glob.escape(real) + ".*.tmp"):
        if not locked:
            parts = tmp[len(real) + 1:].split(".")
            if len(parts) != 4 or parts[0] != _HOST or not parts[1].isdigit() or _alive(int(parts[1])):
                continue
        try:
            os.unlink(tmp)
            log.info("hipbmm_inductor tuning: removed %s, left by a writer that did not finish", tmp)
        except OSError:
            pass


def write_atomically(path: str, text: str, locked: bool = False) -> None:
    """Replace ``path``'s contents with ``text``: all of it or nothing, even on a full disk or a crash.

    A symlink is followed (the target is replaced, the link kept). An existing file keeps its mode
    (and owner, where allowed); a new one gets the umask's. ``locked``: the caller holds
    ``file_lock(path)``, so any temporary file of ``path`` is an orphan and is deleted.
    """
    real = os.path.realpath(path)
    folder = os.path.dirname(real) or "."
    _remove_orphans(real, locked)
    try:
        old = os.stat(real)
    except FileNotFoundError:
        old = None
    tmp = _tmp_path(real)
    # 0o666 through os.open: the kernel applies the umask (and a folder's default ACL), as for
    # any file the user creates. (tempfile.mkstemp would make it 0o600.)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            if old is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(old.st_mode))
                if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                    try:  # root (or a member of the group) can keep the owner; others cannot
                        os.fchown(f.fileno(), old.st_uid, old.st_gid)
                    except OSError:
                        pass
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (POSIX); not possible on every platform
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


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
                removed.append((_line(old), f"replaced by a row measured at {row.measured_at} ({source})"))
            else:
                report.kept_newer += 1
                removed.append((_line(row), f"not written ({source}): the file's row was measured later, at "
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
                    if loaded.cleared_at and row.measured_at < loaded.cleared_at:
                        report.dropped += 1  # measured before a `cache clear`: do not undo it
                        removed.append((_line(row), f"not written: measured before the cache was cleared "
                                                    f"at {loaded.cleared_at}"))
                    else:
                        incoming.append(row)
                self._merge(rows, incoming, report, removed, "a tuning process")
                return rows

            try:
                self._rewrite(arch, written_by, change)
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
            return rows

        with self._lock:
            return self._rewrite(arch, written_by, change)

    def clear(self, arch: str, written_by: str) -> WriteReport:
        """``cache clear``: empty ``arch``'s file under the writers' lock and mark it ``cleared_at``.

        The file stays (empty but for its header and the mark) so that a process that was running
        does not write rows it measured before the clear back into it.
        """
        stamp = now_utc()

        def change(loaded: LoadResult, report: WriteReport, removed: list) -> dict:
            report.dropped = len(loaded.rows)
            loaded.cleared_at = stamp
            # Rows this process could not write yet are cleared too, but recorded.
            removed.extend((_line(r), "cleared before it reached the file")
                           for r in self._pending.get(arch, {}).values())
            return {}

        with self._lock:
            report = self._rewrite(arch, written_by, change)
            self._pending.pop(arch, None)
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


def _line(row: Row) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row.to_fields())
    return out.getvalue()
