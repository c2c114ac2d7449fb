"""status() and the `info` command."""

from __future__ import annotations

import json
import subprocess
import sys

import hipbmm_inductor as hi
from hipbmm_inductor.cli import main


def test_status_reports_every_backend():
    s = hi.status("cpu")
    names = [b.name for b in s.backends]
    assert {"reference", "triton", "aiter"} <= set(names)
    assert s.chosen_backend == "reference" and s.platform == "cpu"
    for b in s.backends:
        assert b.usable or b.reason, f"{b.name} unusable without a reason"
    assert "reference" in s.format()
    assert s.tuning_mode in ("off", "cache", "online") and f"tuning:   {s.tuning_mode}" in s.format()
    assert f"triton:   {s.triton_accumulation} accumulation" in s.format()


def test_info_json(capsys):
    assert main(["info", "--json", "--device", "cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["chosen_backend"] == "reference"
    assert {b["name"] for b in data["backends"]} >= {"reference", "triton", "aiter"}


def test_info_with_unusable_named_backend(capsys):
    # aiter never runs on a CPU: the report says so and the exit code is non-zero.
    assert main(["info", "--device", "cpu", "--backend", "aiter"]) == 1
    out = capsys.readouterr().out
    assert "HIPBMM_BACKEND=aiter -> none" in out


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "hipbmm_inductor", "info", "--device", "cpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "backend:  HIPBMM_BACKEND=auto -> reference" in r.stdout


def test_bad_backend_is_one_line_error():
    r = subprocess.run([sys.executable, "-m", "hipbmm_inductor", "info", "--backend", "cublas"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: set_backend: unknown backend 'cublas'")
    assert "Traceback" not in r.stderr


def test_status_reports_a_bad_accumulation_value(monkeypatch):
    monkeypatch.setenv("HIPBMM_TRITON_ACCUMULATION", "exact")
    s = hi.status()
    assert s.triton_accumulation.startswith("invalid (HIPBMM_TRITON_ACCUMULATION='exact'")
