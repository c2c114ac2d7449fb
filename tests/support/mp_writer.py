"""Worker for test_multiprocess: upserts rows one by one into a shared tuning folder.

Usage: python -m tests.support.mp_writer FOLDER WORKER_ID ROWS
"""

from __future__ import annotations

import random
import sys
import time

from hipbmm_inductor.tuning.rows import Row
from hipbmm_inductor.tuning.store import Store


def main(folder: str, worker: int, rows: int) -> None:
    store = Store(folder)
    rng = random.Random(worker)
    for i in range(rows):
        row = Row(
            backend="fake_tune", arch="cpu", device_name="test cpu", versions=f"writer={worker}",
            a_dtype="float8_e4m3fn", b_dtype="float8_e4m3fn", out_dtype="bfloat16", bias="none",
            n=16 * (1000 * worker + i + 1), k=64, m_bucket=1, extra="", config=f'{{"worker": {worker}, "i": {i}}}',
            time_us=1.0 + i, default_time_us=2.0 + i, measured_at="2026-11-24T03:00:00Z",
        )
        if not store.upsert("cpu", [row], f"writer={worker}"):
            raise SystemExit(f"worker {worker}: upsert of row {i} failed")
        time.sleep(rng.random() * 0.005)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
