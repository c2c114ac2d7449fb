"""Recording shapes that ran untuned, for ``python -m hipbmm_inductor tune --from FILE``.

TunableOp's record-untuned workflow: serve (or run a representative workload) with
``HIPBMM_TUNING_RECORD=1``, then tune the recorded shapes offline, outside the serving process.
Shapes are also recorded, whatever the setting, when online tuning had to skip them because a
CUDA graph was being captured or ``torch.compile`` was tracing.

File ``<cache dir>/untuned-<arch>.csv``: one line per (backend, dtypes, bias, N, K, M bucket,
extra), appended under the same file lock as the tuning file, each shape once per process (the
first M seen in its bucket is written).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass

from .files import file_lock
from .key import safe_arch
from .rows import Where, now_utc

__all__ = ["UNTUNED_COLUMNS", "UntunedShape", "untuned_path", "append_untuned", "read_untuned", "make_untuned"]

log = logging.getLogger("hipbmm_inductor")

UNTUNED_COLUMNS = (
    "backend", "arch", "device_name", "versions", "a_dtype", "b_dtype", "out_dtype", "bias",
    "m", "n", "k", "extra", "reason", "first_seen",
)
_HEADER = ",".join(UNTUNED_COLUMNS)


@dataclass(frozen=True)
class UntunedShape(Where):
    m: int
    n: int
    k: int
    extra: str
    reason: str
    first_seen: str

    def to_fields(self) -> list[str]:
        return [str(getattr(self, c)) for c in UNTUNED_COLUMNS]

    @classmethod
    def from_fields(cls, fields: list[str]) -> "UntunedShape":
        if len(fields) != len(UNTUNED_COLUMNS):
            raise ValueError(f"expected {len(UNTUNED_COLUMNS)} fields, got {len(fields)}")
        d = dict(zip(UNTUNED_COLUMNS, fields))
        for name in ("m", "n", "k"):
            d[name] = int(d[name])
            if d[name] <= 0:
                raise ValueError(f"{name}={d[name]} is not positive")
        for name in ("backend", "a_dtype", "b_dtype", "out_dtype", "bias"):
            if not d[name].strip():
                raise ValueError(f"empty {name}")
        return cls(**d)


def untuned_path(folder: str, arch: str) -> str:
    return os.path.join(folder, f"untuned-{safe_arch(arch)}.csv")


def append_untuned(path: str, shape: UntunedShape) -> None:
    """Append one shape (creating the file with its header); raises ``OSError`` if unwritable."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow(shape.to_fields())
    with file_lock(os.path.realpath(path)):  # the lock `cache clear --untuned` takes, link or not
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        with open(path, "a", encoding="utf-8", newline="") as f:
            if new:
                f.write(_HEADER + "\n")
            f.write(line.getvalue())
            f.flush()
            os.fsync(f.fileno())


def read_untuned(path: str) -> tuple[list[UntunedShape], int]:
    """The shapes in a record file (duplicates removed) and the number of unreadable lines."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        lines = [ln.rstrip("\r") for ln in f.read().split("\n")]  # not splitlines(): see rows.read_rows
    lines = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    if lines and lines[0].strip() == _HEADER:
        lines = lines[1:]
    shapes: dict[tuple, UntunedShape] = {}
    bad = 0
    for line in lines:
        try:
            s = UntunedShape.from_fields(next(csv.reader([line])))
        except (ValueError, csv.Error, StopIteration):
            bad += 1
            continue
        shapes.setdefault((s.backend, s.a_dtype, s.b_dtype, s.out_dtype, s.bias, s.n, s.k, s.m, s.extra), s)
    if bad:
        log.warning("hipbmm_inductor: %s has %d unreadable line(s); skipped them", path, bad)
    return list(shapes.values()), bad


def make_untuned(backend: str, info, a_dtype: str, b_dtype: str, out_dtype: str, bias: str,
                 m: int, n: int, k: int, extra: str, reason: str) -> UntunedShape:
    return UntunedShape(backend, info.arch, info.name, info.versions, a_dtype, b_dtype, out_dtype, bias,
                        m, n, k, extra, reason, now_utc())

