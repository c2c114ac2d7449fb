"""status() and the `info` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

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


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "hipbmm_inductor", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


@pytest.mark.parametrize("args,flag,rule", [
    (["info", "--backend", "nonsense"], "--backend", "unknown backend 'nonsense'; expected one of auto, reference"),
    (["demo", "--tokens", "abc"], "--tokens", "expected a positive integer, got 'abc'"),
    (["demo", "--iters", "0"], "--iters", "expected a positive integer, got '0'"),
    (["tune", "--fp8", "wat", "--shapes", "1x16x32"], "--fp8", "unknown fp8 flavour 'wat'; expected one of"),
    (["tune", "--bias", "f16", "--shapes", "1x16x32"], "--bias", "unknown bias dtype 'f16'; expected one of"),
    (["tune", "--max-candidates", "x", "--shapes", "1x16x32"], "--max-candidates", "expected a whole number"),
    (["cache", "show", "--device", "tpu"], "--device", "'tpu' is not a device; expected cpu, cuda or cuda:N"),
    (["info", "--device", "meta"], "--device", "'meta': expected cpu, cuda or cuda:N"),
    (["bench", "--backend", "cublas"], "--backend", "unknown backend 'cublas'"),
])
def test_cli_errors_are_one_line_naming_the_flag_and_rule(args, flag, rule):
    r = _cli(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"error: argument {flag}: {rule}"), r.stderr


@pytest.mark.skipif(bool(torch.version.cuda or torch.version.hip), reason="needs a CPU-only PyTorch build")
@pytest.mark.parametrize("command", ["demo", "info", "tune"])
def test_cuda_on_a_cpu_only_build_is_one_line(command):
    r = _cli(command, "--device", "cuda", *(["--shapes", "1x16x32"] if command == "tune" else []))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "argument --device: 'cuda': this PyTorch" in r.stderr and "CPU-only build" in r.stderr


@pytest.mark.parametrize("name,value", [("HIPBMM_TRITON_ACCUMULATION", "slow"), ("HIPBMM_TUNING", "wat"),
                                        ("HIPBMM_LOWERING", "maybe"), ("HIPBMM_USE_AITER", "perhaps"),
                                        ("VLLM_ROCM_USE_AITER", "yes"), ("HIPBMM_TUNING_RECORD", "maybe")])
def test_info_reports_a_bad_value_and_exits_non_zero(name, value):
    r = _cli("info", "--device", "cpu", **{name: value})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("invalid:")]
    assert line == f"invalid:  {name}={value!r}: expected " + line.split(": expected ", 1)[1]
    assert "accumulation (" not in line  # not mixed into another line
    r = _cli("info", "--device", "cpu", "--json", **{name: value})
    assert r.returncode == 1 and any(name in e for e in json.loads(r.stdout)["config_errors"])


def test_triton_interpreter_without_numpy_is_not_usable(monkeypatch):
    import importlib.util

    from hipbmm_inductor.ops import registry

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numpy" else real(name, *a))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    (triton,) = [b for b in hi.status("cpu").backends if b.name == "triton"]
    assert not triton.usable and "numpy" in triton.reason
    assert not registry.availability("triton", torch.device("cpu"))


def test_status_reports_a_bad_accumulation_value(monkeypatch):
    monkeypatch.setenv("HIPBMM_TRITON_ACCUMULATION", "exact")
    s = hi.status()
    assert s.triton_accumulation == "invalid"
    assert s.config_errors == ["HIPBMM_TRITON_ACCUMULATION='exact': expected one of promoted, fast"]


def test_info_refuses_a_cache_path_that_is_a_file(tmp_path):
    # As the cache and tune commands do: every tuned result would otherwise stay in memory.
    f = tmp_path / "not_a_folder"
    f.write_text("x")
    r = _cli("info", "--device", "cpu", HIPBMM_TUNING_CACHE=str(f))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert any(ln.startswith("invalid:") and "is a file, not a folder" in ln for ln in r.stdout.splitlines()), r.stdout
    assert f.read_text() == "x"


def test_status_reports_an_unknown_backend_as_a_bad_value(monkeypatch):
    monkeypatch.setenv("HIPBMM_BACKEND", "cublas")
    s = hi.status("cpu")
    assert s.chosen_backend is None
    assert any(e.startswith("HIPBMM_BACKEND='cublas': unknown backend") for e in s.config_errors)


@pytest.mark.parametrize("build,visible,says", [
    ((None, None), False, "CPU-only build"),
    (("13.0", None), False, "no GPU is visible"),
    ((None, "6.4"), False, "no GPU is visible"),
])
def test_device_errors_name_the_reason(monkeypatch, capsys, build, visible, says):
    monkeypatch.setattr(torch.version, "cuda", build[0])
    monkeypatch.setattr(torch.version, "hip", build[1])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible)
    with pytest.raises(SystemExit) as e:
        main(["demo", "--device", "cuda"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and says in err and "argument --device" in err
