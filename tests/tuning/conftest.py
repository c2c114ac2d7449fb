"""Every tuning test gets its own empty cache folder and default settings."""

from __future__ import annotations

import pytest

from hipbmm_inductor import envs, tuning


@pytest.fixture(autouse=True)
def tuning_env(tmp_path, monkeypatch):
    for name in ("HIPBMM_TUNING", "HIPBMM_TUNING_CACHE", "HIPBMM_TUNING_RECORD", "HIPBMM_HIP_ONLINE_TUNING",
                 "HIP_ONLINE_TUNING"):
        monkeypatch.delenv(name, raising=False)
        envs.set_override(name, None)
    folder = tmp_path / "cache"
    tuning.set_cache_dir(str(folder))
    tuning.reset_counters()
    tuning.set_timer(None)
    # Small measurements: the fake backend's timer is deterministic, so more reps add nothing
    # but CPU time; 1 MiB of rotating inputs still exercises the rotation.
    tuning.set_bench_settings(tuning.BenchSettings(warmup_calls=1, min_reps=3, max_reps=5, rotate_bytes=1 << 20))
    yield folder
    for name in ("HIPBMM_TUNING", "HIPBMM_TUNING_CACHE", "HIPBMM_TUNING_RECORD", "HIPBMM_HIP_ONLINE_TUNING"):
        envs.set_override(name, None)
    tuning.reload()
    tuning.set_timer(None)
    tuning.set_bench_settings(None)


@pytest.fixture(autouse=True)
def cpu_only_unless_gpu_test(request, monkeypatch):
    """The CLI defaults to the GPU when there is one; these tests drive a fake CPU backend and
    read the CPU's cache file, so on a GPU machine they pretend there is none (GPU tests excepted)."""
    if request.node.path.name != "test_gpu.py":
        import torch

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_backend():
    """The tests' fake backend registered, with its deterministic timer (CLI and record tests)."""
    from hipbmm_inductor.ops import registry

    from tests.support import tuning_fakes as fakes

    fakes.register()
    tuning.set_timer(fakes.fake_timer)
    yield
    registry._backends.pop("fake_tune", None)
    registry.reset_selection()
