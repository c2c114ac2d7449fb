"""One place for configuration: every variable is read in envs.py and documented in README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hipbmm_inductor import envs

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("hipbmm_inductor", "ops", "lowering") for p in (ROOT / d).rglob("*.py")]
READ = re.compile(r"os\.getenv\(|os\.environ\.get\(|os\.environ\[[^\]]+\](?!\s*=[^=])|environ\.copy\(")


def test_environment_is_read_only_in_envs():
    offenders = []
    for path in SOURCES:
        if path.name == "envs.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if READ.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "read environment variables through hipbmm_inductor.envs:\n" + "\n".join(offenders)


def test_every_hipbmm_variable_is_declared():
    used = set()
    for path in SOURCES:
        used |= set(re.findall(r"\b(HIPBMM_[A-Z_]+)\b", path.read_text()))
    assert used <= set(envs.ENV_VARS), sorted(used - set(envs.ENV_VARS))


@pytest.mark.parametrize("name", sorted(n for n in envs.ENV_VARS if n.startswith("HIPBMM_")))
def test_documented_in_envs_table_and_readme(name):
    assert f"``{name}``" in envs.__doc__
    assert f"`{name}`" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(envs.ENV_VARS))
def test_defaults_parse(name, monkeypatch):
    monkeypatch.delenv(name, raising=False)
    getattr(envs, name)


def test_bad_flag_names_variable_and_values(monkeypatch):
    monkeypatch.setenv("HIPBMM_LOWERING", "maybe")
    with pytest.raises(ValueError, match=r"HIPBMM_LOWERING='maybe': expected one of 1/0, true/false"):
        envs.HIPBMM_LOWERING


def test_python_override_wins(monkeypatch):
    monkeypatch.setenv("HIPBMM_LOWERING", "1")
    envs.set_override("HIPBMM_LOWERING", False)
    try:
        assert envs.HIPBMM_LOWERING is False
    finally:
        envs.set_override("HIPBMM_LOWERING", None)
    assert envs.HIPBMM_LOWERING is True


def test_unknown_override():
    with pytest.raises(KeyError, match="unknown hipbmm_inductor setting"):
        envs.set_override("HIPBMM_NOPE", 1)


def test_python_override_of_a_choice_is_checked():
    with pytest.raises(ValueError, match=r"HIPBMM_TRITON_ACCUMULATION='Fast': expected one of promoted, fast"):
        envs.set_override("HIPBMM_TRITON_ACCUMULATION", "Fast")
    assert envs.HIPBMM_TRITON_ACCUMULATION == "promoted"  # nothing was stored


def test_bad_accumulation_mode_in_environment(monkeypatch):
    monkeypatch.setenv("HIPBMM_TRITON_ACCUMULATION", "exact")
    with pytest.raises(ValueError, match=r"HIPBMM_TRITON_ACCUMULATION='exact': expected one of promoted, fast"):
        envs.HIPBMM_TRITON_ACCUMULATION
