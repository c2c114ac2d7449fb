"""`cache clear` and `cache import` against writers running at the same time, in real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hipbmm_inductor.tuning.rows import Row, read_rows, render
from hipbmm_inductor.tuning.store import Store

ROOT = Path(__file__).resolve().parents[2]


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.support.mp_clear", *args], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.PIPE, text=True)


def _wait(procs) -> None:
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_concurrent_writer_never_undoes_a_clear(tmp_path):
    folder = tmp_path / "shared"
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    clear_log = tmp_path / "clear.log"
    procs = [_spawn("writer", str(folder), str(i), "100", str(log)) for i, log in enumerate(logs)]
    procs.append(_spawn("clear", str(folder), "5", str(clear_log)))
    _wait(procs)
    clears = _log(clear_log)
    writes = [w for log in logs for w in _log(log)]
    assert len(clears) == 5 and all(w["ok"] for w in writes)
    path = Store(str(folder)).path("cpu")
    assert os.path.exists(path + ".lock")  # the lock file is never deleted
    loaded = read_rows(path)
    assert not loaded.problems and loaded.cleared_at
    final = {r.n for r in loaded.rows}
    last = clears[-1]
    # A row written before the last clear began must be gone; one written after it ended must be
    # there. (Rows whose write overlapped the clear may be either.)
    before = {w["n"] for w in writes if w["end"] < last["clear_start"]}
    after = {w["n"] for w in writes if w["start"] > last["clear_end"]}
    assert before, "the clear ran after every write: the test did not overlap them"
    assert not (final & before), sorted(final & before)[:5]
    assert after <= final, sorted(after - final)[:5]


def test_clear_waits_for_a_writer_inside_its_read_merge_write(tmp_path):
    folder = tmp_path / "shared"
    store = Store(str(folder))
    old = Row(**{**_seed_fields(), "n": 16})
    assert store.upsert("cpu", [old], "v=1")
    marker, log = tmp_path / "inside", tmp_path / "slow.log"
    writer = _spawn("slow_writer", str(folder), str(marker), str(log))
    deadline = time.monotonic() + 120
    while not marker.exists():  # the writer has read the file (with `old`) and holds the lock
        assert writer.poll() is None and time.monotonic() < deadline, writer.stderr.read() if writer.stderr else ""
        time.sleep(0.02)
    t0 = time.time()
    report = Store(str(folder)).clear("cpu", "v=1")
    _wait([writer])
    (done,) = _log(log)
    assert done["ok"] and t0 < done["end"] <= time.time()  # the clear waited for the writer's lock
    assert report.dropped == 2  # `old` and the writer's row, both written before the clear got the lock
    loaded = read_rows(store.path("cpu"))
    assert loaded.rows == [] and loaded.cleared_at  # the writer did not write `old` back


def _seed_fields() -> dict:
    return dict(backend="fake_tune", arch="cpu", device_name="test cpu", versions="v=1", a_dtype="float8_e4m3fn",
                b_dtype="float8_e4m3fn", out_dtype="bfloat16", bias="none", n=16, k=64, m_bucket=1, extra="",
                config='{"seed": 1}', time_us=1.0, default_time_us=2.0, measured_at="2026-11-24T03:00:00Z")


def test_import_while_writers_write_keeps_every_row(tmp_path):
    folder = tmp_path / "shared"
    shipped = tmp_path / "ship.csv"
    ship_rows = [Row(**{**_seed_fields(), "n": 16 * (900_000 + i), "config": '{"shipped": 1}'}) for i in range(200)]
    shipped.write_text(render(ship_rows, "cpu", "v=1"))
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = [_spawn("writer", str(folder), str(i), "30", str(log)) for i, log in enumerate(logs)]
    procs += [_spawn("import", str(folder), str(shipped), str(tmp_path / f"i{j}.log")) for j in range(2)]
    _wait(procs)
    final = {r.n for r in read_rows(Store(str(folder)).path("cpu")).rows}
    written = {w["n"] for log in logs for w in _log(log)}
    assert written <= final and {r.n for r in ship_rows} <= final
