"""The tuning cache's file format: one CSV row per tuned GEMM, how a file is read and rendered.

Reading never raises for content: lines that do not parse, and rows dropped by the duplicate rule
(:func:`newer`), are returned beside the rows, for :mod:`.store` to record. The rules the format
answers are in :mod:`.store`'s docstring.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Iterable

log = logging.getLogger("hipbmm_inductor")

__all__ = ["COLUMNS", "HEADER", "FORMAT_LINE", "Row", "LoadResult", "read_rows", "render", "row_line",
           "canonical_config", "now_utc", "newer"]

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
class Where:
    """What both a tuned row and a recorded untuned shape say about where a GEMM ran: backend,
    device, library versions and dtypes (the leading columns of both files)."""

    backend: str
    arch: str
    device_name: str
    versions: str
    a_dtype: str
    b_dtype: str
    out_dtype: str
    bias: str


@dataclass(frozen=True)
class Row(Where):
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
    newer_format: str = ""  # the format number of a file a newer release wrote (not ours: not rewritten)


_CLEARED = "# cleared_at="
_FORMAT = re.compile(r"# hipbmm_inductor tuning cache, format (\d+)\b")
_FORMAT_NUMBER = _FORMAT.match(FORMAT_LINE).group(1)


def read_rows(path: str) -> LoadResult:
    """Every valid row of a tuning CSV, plus the raw lines that are not (never raises for content)."""
    result = LoadResult()
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):  # no file yet (or no folder): an empty cache
        return result
    if raw and not raw.endswith(b"\n"):
        # Our writer always ends with a newline: a missing one means the file was cut short.
        result.problems.append("a truncated last line")
    # Decoded line by line (a newline byte never occurs inside a UTF-8 sequence): a line that is not
    # UTF-8 is a bad line, kept for .rejected with its bytes escaped (\xe9), never loaded with its
    # text replaced, which would change its key for good on the next write. Not "\ufffd in text":
    # U+FFFD is a valid character a device name may hold (found by test_rows_round_trip).
    # split("\n"), not splitlines(): the latter also breaks at \x1c-\x1e, \x85 and \u2028, which
    # may appear inside a quoted device name or config (found by test_rows_round_trip).
    lines = []
    for chunk in raw.split(b"\n"):
        try:
            lines.append(chunk.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            result.bad_lines.append(chunk.decode("utf-8", errors="backslashreplace").rstrip("\r"))
            if "bytes that are not UTF-8" not in result.problems:
                result.problems.append("bytes that are not UTF-8")
    for ln in lines:
        if ln.startswith(_CLEARED):
            result.cleared_at = max(result.cleared_at, ln[len(_CLEARED):].strip())
    found = _FORMAT.match(lines[0]) if lines else None
    if found and found.group(1) != _FORMAT_NUMBER:
        # Written by another release's format: its rows are read where the header allows, but the
        # file is never rewritten in this format (Store refuses), which could drop what it added.
        result.newer_format = found.group(1)
        result.problems.append(f"format {found.group(1)} (this release reads and writes format {_FORMAT_NUMBER})")
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
        except (ValueError, csv.Error, RecursionError) as e:  # JSONDecodeError is a ValueError; absurd nesting recurses
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


def row_line(row: Row) -> str:
    """One row as its CSV line, without the line end."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row.to_fields())
    return out.getvalue()
