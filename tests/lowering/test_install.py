"""Installation: cheap import, install when Inductor loads, and a cache key that tracks the setup."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import hipbmm_inductor
from hipbmm_inductor import lowering

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_PROBE = """
import json, sys, torch
# Optional dependencies, and Inductor (about 1.3 s to import: lowering/hook.py).
HEAVY = ("triton", "aiter", "vllm", "torch._inductor")
# What Inductor cannot import while its config is loading (a circular import inside Inductor):
# the pass installs then, so nothing it imports may pull these in.
CYCLIC = ("torch._inductor.pattern_matcher", "torch._inductor.fx_passes.freezing_patterns",
          "torch._inductor.lowering", "torch._inductor.ir")
import hipbmm_inductor
# The tuner too: it costs as much import time again as the rest of the package (status.py).
loaded = {"import": [m for m in HEAVY + ("hipbmm_inductor.tuning",) if m in sys.modules]}
from hipbmm_inductor.ops import registry
for name in registry.backend_names():  # what status() and `auto` probe first (Triton: "imported on first use")
    registry.availability(name, torch.device("cpu"))
loaded["probe"] = [m for m in HEAVY if m in sys.modules]
import torch._inductor.config as c
loaded["install"] = [m for m in CYCLIC if m in sys.modules]
print(json.dumps({"loaded": loaded, "installed": type(c.joint_custom_pre_pass).__name__}))
"""


def test_import_loads_no_optional_or_inductor_module_and_installs_when_inductor_loads():
    res = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    probe = json.loads(res.stdout.strip().splitlines()[-1])
    assert probe == {"loaded": {"import": [], "probe": [], "install": []}, "installed": "HipbmmLoweringPass"}, probe


_PROBE_INDUCTOR_FIRST = """
import torch._inductor.config as c
import hipbmm_inductor
print(type(c.joint_custom_pre_pass).__name__)
"""


def test_installs_at_import_when_inductor_is_already_loaded():
    res = subprocess.run([sys.executable, "-c", _PROBE_INDUCTOR_FIRST], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "HipbmmLoweringPass", res.stdout + res.stderr[-2000:]


_PROBE_PASS_FIRST = """
import sys, hipbmm_inductor
from hipbmm_inductor.lowering import inductor_pass  # its own imports load Inductor's config mid-import
import torch._inductor.config as c
print(type(c.joint_custom_pre_pass).__name__)
"""


def test_installs_when_the_pass_module_is_imported_first():
    res = subprocess.run([sys.executable, "-c", _PROBE_PASS_FIRST], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "HipbmmLoweringPass", res.stdout + res.stderr[-2000:]


def test_fingerprint_tracks_enabled_state_and_backend():
    from hipbmm_inductor.lowering.inductor_pass import fingerprint

    if hipbmm_inductor.envs.is_set("HIPBMM_BACKEND"):
        pytest.skip("HIPBMM_BACKEND is set in the environment")
    seen = {}
    try:
        for backend in (None, "reference"):
            for enabled in (True, False):
                hipbmm_inductor.set_backend(backend)
                (lowering.enable if enabled else lowering.disable)()
                seen[(backend, enabled)] = fingerprint()
                assert fingerprint() == seen[(backend, enabled)]  # stable: same setup, same key
    finally:
        hipbmm_inductor.envs.set_override("HIPBMM_LOWERING", None)
    assert len(set(seen.values())) == len(seen), seen


def test_install_is_idempotent_and_keeps_one_pass():
    import torch._inductor.config as inductor_config

    first = lowering.install()
    assert lowering.install() is first and inductor_config.joint_custom_pre_pass is first
