"""GPU: a cold process tunes, a second process reuses the cache with zero benchmarking.

Runs ``benchmarks/tune_gain.py`` on one small shape (its speed numbers belong to the benchmark,
not to this test; see docs/tuning.md for the measured gain).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/ROCm device")
def test_cold_process_tunes_warm_process_reuses(tmp_path):
    out = tmp_path / "gain.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "tune_gain.py"), "--shapes", "4096,4096", "--m", "16",
         "--max-candidates", "4", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert out.exists(), r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["checks"]["cold_process_tuned_shapes"] == 1, report["cold"]
    assert report["checks"]["warm_process_benchmarked_configs"] == 0
    assert report["checks"]["reuse_without_benchmarking"], report["warm"]["counters_after_reuse_calls"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/ROCm device")
def test_new_shape_during_real_graph_capture_is_not_tuned(tuning_env):
    from hipbmm_inductor import tuning
    from hipbmm_inductor.tuning.key import device_info

    from . import fakes

    tuning.set_mode("online")
    tuning.set_timer(fakes.fake_timer)
    fakes.STATE.runs.clear()
    args = [t.cuda() if isinstance(t, torch.Tensor) else t for t in fakes.inputs(M=16, N=64, K=64)]
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph):
            config = fakes.choose(*args)
            out = args[0].float() * config["cost"]  # some captured work that uses the answer
    graph.replay()
    torch.cuda.synchronize()
    assert config is fakes.DEFAULT and fakes.STATE.runs == []
    assert tuning.counters()["skipped_unsafe"] == 1
    arch = device_info(args[0].device).arch
    assert "a CUDA graph is being captured" in (tuning_env / f"untuned-{arch}.csv").read_text()
    torch.testing.assert_close(out, args[0].float() * fakes.DEFAULT["cost"])
    # Outside capture the same shape is tuned.
    assert fakes.choose(*args) == fakes.FASTEST_CORRECT
