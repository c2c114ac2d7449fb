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
import hipbmm_inductor
before = "torch._inductor.config" in sys.modules
import torch._inductor.config as c
print(json.dumps({"inductor_imported_by_us": before, "installed": type(c.joint_custom_pre_pass).__name__}))
"""


def test_import_does_not_load_inductor_and_installs_when_it_loads():
    res = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    probe = json.loads(res.stdout.strip().splitlines()[-1])
    assert probe == {"inductor_imported_by_us": False, "installed": "HipbmmLoweringPass"}, probe


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
