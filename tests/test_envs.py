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


# -- one rule for every variable ----------------------------------------------------------------
_BAD = "definitely-not-a-value"
_CHECKED = sorted(n for n in envs.ENV_VARS if n not in ("HIPBMM_BACKEND", "HIPBMM_TUNING_CACHE"))


@pytest.mark.parametrize("name", _CHECKED)
def test_every_variable_rejects_a_bad_value_naming_itself_and_the_rule(name, monkeypatch):
    monkeypatch.setenv(name, _BAD)
    with pytest.raises(ValueError, match=rf"^{name}='{_BAD}': expected ") as e:
        getattr(envs, name)
    assert any(word in str(e.value) for word in ("1/", "one of")), e.value
    assert any(name in p for p in envs.problems())
    with pytest.raises(ValueError):  # every read, not only the first
        getattr(envs, name)


@pytest.mark.parametrize("name", [n for n in _CHECKED if envs._SPECS[n].expected.startswith("one of 1/0")])
@pytest.mark.parametrize("value,expected", [("1", True), (" TRUE ", True), ("yes", True), ("On", True),
                                            ("0", False), ("false", False), ("no", False), ("OFF", False),
                                            ("", False)])
def test_our_switches_share_the_lowerings_spellings(name, value, expected, monkeypatch):
    monkeypatch.setenv(name, value)
    assert getattr(envs, name) is expected
    monkeypatch.setenv("HIPBMM_LOWERING", value)
    assert envs.HIPBMM_LOWERING is expected  # the same rule as the lowering's


@pytest.mark.parametrize("value,expected", [("auto", "auto"), ("1", "1"), ("true", "1"), ("on", "1"),
                                            ("0", "0"), ("no", "0"), ("OFF", "0")])
def test_vllm_enable_takes_auto_or_a_switch(value, expected, monkeypatch):
    monkeypatch.setenv("HIPBMM_VLLM_ENABLE", value)
    assert envs.HIPBMM_VLLM_ENABLE == expected


@pytest.mark.parametrize("name,on,ambiguous", [
    ("VLLM_ROCM_USE_AITER", ["1", "true", "TRUE"], ["yes", "on", " 1"]),  # vLLM: lower() in ("true", "1")
    ("HIP_ONLINE_TUNING", ["1", "true"], ["True", "yes", " 1"]),  # aiter: strcmp with "1" / "true"
    ("TRITON_INTERPRET", ["1", "true", "On", "YES"], [" 1", "2"]),  # Triton: lower() in 1/true/on/yes
])
def test_foreign_switches_follow_their_owner(name, on, ambiguous, monkeypatch):
    for value in on:
        monkeypatch.setenv(name, value)
        assert getattr(envs, name) is True
    for value in ("0", "false", ""):
        monkeypatch.setenv(name, value)
        assert getattr(envs, name) is False
    for value in ambiguous:  # the owner would read these differently from a naive parse: refused
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=rf"^{name}="):
            getattr(envs, name)


def test_python_overrides_follow_the_same_rule():
    with pytest.raises(ValueError, match=r"HIPBMM_TUNING_RECORD='1': expected True or False"):
        envs.set_override("HIPBMM_TUNING_RECORD", "1")
    with pytest.raises(ValueError, match=r"HIPBMM_VLLM_ENABLE='yes': expected one of auto, 1, 0"):
        envs.set_override("HIPBMM_VLLM_ENABLE", "yes")
    assert not envs.is_overridden("HIPBMM_TUNING_RECORD")  # nothing was stored


def test_raw_reads_the_live_environment_and_overrides(monkeypatch):
    # A memo key: it must change whenever the environment or an override does.
    monkeypatch.delenv("HIPBMM_TRITON_ACCUMULATION", raising=False)
    assert envs.raw("HIPBMM_TRITON_ACCUMULATION") is None
    monkeypatch.setenv("HIPBMM_TRITON_ACCUMULATION", "fast")
    fast = envs.raw("HIPBMM_TRITON_ACCUMULATION")
    monkeypatch.setenv("HIPBMM_TRITON_ACCUMULATION", "promoted")
    assert envs.raw("HIPBMM_TRITON_ACCUMULATION") != fast and fast is not None
    envs.set_override("HIPBMM_TRITON_ACCUMULATION", "fast")
    try:
        assert envs.raw("HIPBMM_TRITON_ACCUMULATION") == "fast"
    finally:
        envs.set_override("HIPBMM_TRITON_ACCUMULATION", None)


def test_an_override_that_decides_selection_resets_it(monkeypatch):
    # set_override("HIPBMM_USE_AITER", ...) must not be ignored by a device whose backend was
    # already chosen: the registry forgets its choices.
    import torch

    from hipbmm_inductor.ops import registry

    registry.backend_for(torch.device("cpu"))
    assert registry._selected
    envs.set_override("HIPBMM_USE_AITER", False)
    try:
        assert not registry._selected
    finally:
        envs.set_override("HIPBMM_USE_AITER", None)


def test_overriding_puts_back_what_was_there_even_on_error(monkeypatch):
    monkeypatch.setenv("HIPBMM_BACKEND", "reference")
    envs.set_override("HIPBMM_TUNING", "off")
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with envs.overriding({"HIPBMM_TUNING": "cache", "HIPBMM_BACKEND": "triton"}):
                assert envs.HIPBMM_TUNING == "cache" and envs.HIPBMM_BACKEND == "triton"
                raise RuntimeError("inside")
        # The earlier override is back; the setting that had none follows the environment again.
        assert envs.HIPBMM_TUNING == "off" and envs.HIPBMM_BACKEND == "reference"
        assert "HIPBMM_BACKEND" not in envs._overrides
    finally:
        envs.set_override("HIPBMM_TUNING", None)
