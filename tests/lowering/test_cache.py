"""Inductor's FX graph cache never serves an artifact compiled under another lowering setting.

Each compile runs in its own process (the in-memory caches would hide the on-disk one) against one
fresh cache directory, in an order that would expose a stale hit: every setting is compiled
twice, the second time right after a different setting wrote its own artifact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

WORKER = [sys.executable, "-m", "tests.support.graph_cache_worker"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _compile(cache_dir, *settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIPBMM_", "TORCHINDUCTOR_"))}
    env.update(TORCHINDUCTOR_CACHE_DIR=str(cache_dir), TORCHINDUCTOR_FX_GRAPH_CACHE="1")
    res = subprocess.run(WORKER + list(settings), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_cache_never_stale_and_still_hits(tmp_path):
    # "auto" is the default policy (only a *named* backend opts in everywhere).
    on, off, auto = _compile(tmp_path, "enabled:reference", "disabled:reference", "enabled:auto")
    assert on["hipb"] and on["miss"] == 1 and on["hit"] == 0 and on["bypass"] == 0, on
    assert not off["hipb"] and off["hit"] == 0, off  # not the rewritten artifact
    assert not auto["hipb"] and auto["hit"] == 0, auto  # on the CPU auto = reference, not fast

    # A new process with nothing changed hits, for each setting, and gets its own artifact.
    on2, off2 = _compile(tmp_path, "enabled:reference", "disabled:reference")
    assert on2["hipb"] and on2["hit"] == 1 and on2["miss"] == 0, on2
    assert not off2["hipb"] and off2["hit"] == 1, off2
    for r in (on, off, auto, on2, off2):
        # Served artifacts must still compute the right thing. |out| here is below 8, so this is the
        # bf16 bound of conftest.assert_close_to_eager (2^-7 of the largest magnitude) at 8.
        assert r["max_err"] <= 2**-7 * 8, r
