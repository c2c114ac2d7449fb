"""Workers for test_concurrency: writers upserting rows, a clearer, an importer, each logging when
each of its operations started and ended (time.time()) so the test can order them.

Usage: python -m tests.support.mp_clear writer FOLDER ID ROWS LOG
       python -m tests.support.mp_clear clear FOLDER TIMES LOG
       python -m tests.support.mp_clear import FOLDER FILE LOG
       python -m tests.support.mp_clear slow_writer FOLDER MARKER LOG
"""

from __future__ import annotations

import json
import sys
import time

from hipbmm_inductor.tuning.rows import Row, now_utc
from hipbmm_inductor.tuning.store import Store


def row(worker: int, i: int) -> Row:
    return Row(
        backend="fake_tune", arch="cpu", device_name="test cpu", versions="v=1", a_dtype="float8_e4m3fn",
        b_dtype="float8_e4m3fn", out_dtype="bfloat16", bias="none", n=16 * (1000 * worker + i + 1), k=64,
        m_bucket=1, extra="", config=f'{{"worker": {worker}, "i": {i}}}', time_us=1.0, default_time_us=2.0,
        measured_at=now_utc(),
    )


def main(argv: list[str]) -> None:
    what, folder = argv[0], argv[1]
    log = open(argv[-1], "a")
    store = Store(folder)
    if what == "writer":
        worker, rows = int(argv[2]), int(argv[3])
        for i in range(rows):
            r = row(worker, i)
            t0 = time.time()
            ok = store.upsert("cpu", [r], "v=1")
            log.write(json.dumps({"n": r.n, "start": t0, "end": time.time(), "ok": ok}) + "\n")
            log.flush()
    elif what == "clear":
        for _ in range(int(argv[2])):
            time.sleep(0.2)
            t0 = time.time()
            store.clear("cpu", "v=1")
            log.write(json.dumps({"clear_start": t0, "clear_end": time.time()}) + "\n")
            log.flush()
    elif what == "import":
        from hipbmm_inductor.tuning.rows import read_rows

        rows = read_rows(argv[2]).rows
        t0 = time.time()
        report = store.merge("cpu", rows, "v=1", "import")
        log.write(json.dumps({"import_start": t0, "import_end": time.time(), "added": report.added}) + "\n")
    elif what == "slow_writer":
        # One upsert that stops inside its locked read-merge-write (after reading the file) until
        # the test has started a clear: deterministic overlap.
        from hipbmm_inductor.tuning import store as store_mod

        marker, real_write = argv[2], store_mod.write_atomically

        def slow_write(*args, **kwargs):
            open(marker, "w").close()
            time.sleep(1.5)
            return real_write(*args, **kwargs)

        store_mod.write_atomically = slow_write
        ok = store.upsert("cpu", [row(7, 0)], "v=1")
        log.write(json.dumps({"ok": ok, "end": time.time()}) + "\n")
    else:
        raise SystemExit(f"unknown worker {what!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
