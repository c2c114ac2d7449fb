"""The tuning cache on disk: one human-readable CSV per device architecture.

File ``<cache dir>/tuning-<arch>.csv``::

    # hipbmm_inductor tuning cache, format 1. One row per tuned GEMM; rows carry their own versions.
    # arch=gfx942
    # written_by=hipbmm_inductor=0.1.0;torch=2.11.0;triton=3.6.0;hip=6.4;hipblaslt=1.0.60400
    backend,arch,device_name,versions,a_dtype,b_dtype,out_dtype,bias,n,k,m_bucket,extra,config,time_us,default_time_us,measured_at
    triton,gfx942,AMD Instinct MI300X,hipbmm_inductor=0.1.0;...,float8_e4m3fnuz,...,"{""BLOCK_M"": 64, ...}",11.2,13.9,2026-11-24T03:30:05Z

Rules, each answering a weak point of aiter's ``hip_online_tuning_res.csv`` (SPEC section 3):

- Rows measured under other library versions stay in the file (a rollback finds them again) but
  are not used; the ``written_by`` header line says which versions wrote the file last.
- Every write is read-merge-write under a file lock (``filelock``), into a temporary file in the
  same folder, fsynced, then ``os.replace``d over the old one: readers see the old or the new
  file, never half of one, and concurrent writers each keep the other's rows (upsert by key).
- A damaged file (truncated, garbage rows, a wrong header) gives one warning per load; bad lines
  are skipped, good rows kept, and the bad lines are appended to ``<file>.rejected`` before the
  next rewrite so that nothing in the file is ever silently dropped.
- A folder that cannot be written gives one warning and the process keeps its results in memory;
  rows that could not be written are retried on the next write.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import logging
import math
import os
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from .key import safe_arch

__all__ = [
    "COLUMNS",
    "Row",
    "LoadResult",
    "read_rows",
    "Store",
    "file_lock",
    "canonical_config",
    "now_utc",
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


@dataclass
class LoadResult:
    rows: list[Row] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)  # raw text of every line that did not parse
    problems: list[str] = field(default_factory=list)  # one phrase per kind of damage


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
    lines = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    if lines and lines[0].strip() == HEADER:
        lines = lines[1:]
    elif lines:
        result.problems.append("a missing or unexpected column header")
    for line in lines:
        try:
            records = list(csv.reader([line]))
            if len(records) != 1:
                raise ValueError("not one CSV record")
            result.rows.append(Row.from_fields(records[0]))
        except (ValueError, csv.Error) as e:  # json.JSONDecodeError is a ValueError
            result.bad_lines.append(line)
            if "garbage rows" not in result.problems:
                result.problems.append("garbage rows")
            log.debug("tuning cache %s: skipped line %r (%s)", path, line[:120], e)
    return result


def render(rows: Iterable[Row], arch: str, written_by: str) -> str:
    out = io.StringIO()
    out.write(f"{FORMAT_LINE}\n# arch={arch}\n# written_by={written_by}\n{HEADER}\n")
    writer = csv.writer(out, lineterminator="\n")
    for row in sorted(rows, key=lambda r: tuple(str(x) for x in r.key())):
        writer.writerow(row.to_fields())
    return out.getvalue()


_filelock_warning = {"given": False}  # one warning per process


def _warn_filelock_missing_once() -> None:
    if not _filelock_warning["given"]:
        _filelock_warning["given"] = True
        log.warning(
            "hipbmm_inductor tuning: the 'filelock' package is not installed (pip install "
            "'hipbmm-inductor[tune]'); writing the tuning cache without a lock, so processes writing "
            "the same file at the same moment may drop each other's new rows"
        )


@contextmanager
def file_lock(path: str, timeout: float = 60.0) -> Iterator[None]:
    """Exclusive lock on ``path`` across processes (``<path>.lock``), via the filelock package."""
    try:
        import filelock
    except ImportError:
        _warn_filelock_missing_once()
        yield
        return
    # NOTE: filelock's FileLock is fcntl/msvcrt-based on local disks and degrades to a soft
    # (lock-file existence) lock on file systems without fcntl; both are released by the OS or
    # by the timeout if a holder crashes.
    with filelock.FileLock(path + ".lock", timeout=timeout):
        yield


def _write_atomically(path: str, text: str) -> None:
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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


class Store:
    """The tuning files of one cache folder, with one-warning fault handling.

    Not a module global: :mod:`hipbmm_inductor.tuning` holds one instance per configured folder
    and replaces it when the folder changes.
    """

    def __init__(self, folder: str):
        self.folder = os.path.abspath(os.path.expanduser(folder))
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
                "the unreadable lines are kept in %s.rejected on the next write",
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
        rows.update(self._pending.get(arch, {}))
        return list(rows.values())

    def upsert(self, arch: str, new_rows: Iterable[Row], written_by: str) -> bool:
        """Insert or replace rows (by key) in ``arch``'s file; ``False`` if they stay in memory only."""
        with self._lock:
            pending = self._pending.setdefault(arch, {})
            for row in new_rows:
                pending[row.key()] = row
            if self.memory_only:
                return False
            path = self.path(arch)
            try:
                os.makedirs(self.folder, exist_ok=True)
                with file_lock(path):
                    loaded = read_rows(path)
                    self._report(path, loaded)
                    if loaded.bad_lines:
                        with open(path + ".rejected", "a", encoding="utf-8") as f:
                            f.write("".join(line + "\n" for line in loaded.bad_lines))
                    merged = {r.key(): r for r in loaded.rows}
                    merged.update(pending)
                    _write_atomically(path, render(merged.values(), arch, written_by))
            except Exception as e:  # OSError, filelock.Timeout: keep going in memory
                self.memory_only = True
                self._warn_once(
                    "unwritable", self.folder,
                    "hipbmm_inductor tuning cache folder %s cannot be written (%s: %s); tuned results "
                    "are kept in memory for this process only (set HIPBMM_TUNING_CACHE to a writable folder)",
                    self.folder, type(e).__name__, e,
                )
                return False
            pending.clear()
            return True

    def replace_all(self, arch: str, rows: Iterable[Row], written_by: str) -> None:
        """Rewrite ``arch``'s file with exactly ``rows`` (``cache clear --stale``); raises on failure."""
        path = self.path(arch)
        os.makedirs(self.folder, exist_ok=True)
        with self._lock, file_lock(path):
            _write_atomically(path, render(rows, arch, written_by))
            self._pending.pop(arch, None)

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

