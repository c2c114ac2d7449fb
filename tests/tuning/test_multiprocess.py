"""Several processes writing one tuning file at once keep every row and a parseable file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hipbmm_inductor.tuning.rows import read_rows
from hipbmm_inductor.tuning.store import Store

ROOT = Path(__file__).resolve().parents[2]
WORKERS, ROWS = 4, 12


def test_concurrent_upserts_keep_every_row(tmp_path):
    folder = tmp_path / "shared"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.support.mp_writer", str(folder), str(w), str(ROWS)],
                         cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        for w in range(WORKERS)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    loaded = read_rows(Store(str(folder)).path("cpu"))
    assert not loaded.problems and not loaded.bad_lines
    got = {(r.versions, r.n) for r in loaded.rows}
    want = {(f"writer={w}", 16 * (1000 * w + i + 1)) for w in range(WORKERS) for i in range(ROWS)}
    assert got == want
    assert not [p for p in os.listdir(folder) if p.endswith(".tmp")]
