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

    from tests.support import tuning_fakes as fakes

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


@pytest.mark.skipif(not torch.cuda.is_available() or bool(torch.version.hip), reason="needs an NVIDIA GPU")
def test_unusable_cached_configs_fall_back_to_the_heuristic_on_the_gpu(tuning_env, caplog):
    # The Triton backend on the GPU, with the device's own tuning key: {} (the op used to raise
    # KeyError: 'BLOCK_M'), BLOCK_K=48 and, under a portable key, a HOPPER config are cached; every
    # call must compute the right answer, and a usable row (the control) must still be a hit.
    import logging

    from hipbmm_inductor import envs, hipb_mm_fp8, set_backend, tuning
    from hipbmm_inductor.ops.triton_backend import _EXTRA_KEYS
    from hipbmm_inductor.ops.triton_configs import config_space, heuristic_config, hopper_configs
    from hipbmm_inductor.tuning.key import m_bucket
    from hipbmm_inductor.ops.triton_fp8_gemm import hopper_path
    from hipbmm_inductor.tuning.key import device_info
    from hipbmm_inductor.tuning.rows import Row, canonical_config
    from hipbmm_inductor.tuning.store import Store
    from tests.support.inputs import assert_close_to_truth, make_case

    dev = torch.device("cuda", torch.cuda.current_device())
    info = device_info(dev)
    fast = envs.HIPBMM_TRITON_ACCUMULATION == "fast"
    hopper = hopper_path(dev, torch.float8_e4m3fn)
    N, K = 256, 512
    bad = {16: {}, 64: {**heuristic_config(64, N, K, fast, hopper), "BLOCK_K": 48}}
    if not hopper:
        bad[256] = hopper_configs()[0]
    control = next(c for c in config_space(1024, N, K, fast, hopper) if c != heuristic_config(1024, N, K, fast, hopper))
    configs = {**bad, 1024: control}
    rows = [Row(backend="triton", arch=info.arch, device_name=info.name, versions=info.versions,
                a_dtype="float8_e4m3fn", b_dtype="float8_e4m3fn", out_dtype="bfloat16", bias="none", n=N, k=K,
                m_bucket=m_bucket(M), extra=_EXTRA_KEYS[fast, hopper], config=canonical_config(c), time_us=1.0,
                default_time_us=2.0, measured_at="2026-11-24T03:00:00Z") for M, c in configs.items()]
    Store(str(tuning_env)).upsert(info.arch, rows, info.versions)
    tuning.reload()
    tuning.set_mode("cache")
    set_backend("triton")
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        for M in configs:
            case = make_case(M, N, K, bias_dtype=None, device=dev, seed=M)
            assert_close_to_truth(hipb_mm_fp8(*case.args), case, f"M={M}")
    warnings = [r.getMessage() for r in caplog.records if "cannot launch" in r.getMessage()]
    assert len(warnings) == 1 and f"ignoring {len(bad)} cached config(s)" in warnings[0]
    assert tuning.counters()["hits"] == 1 and tuning.counters()["misses"] == len(bad)
