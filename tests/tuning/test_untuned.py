"""Recording untuned shapes (HIPBMM_TUNING_RECORD) and tuning them later with `tune --from`."""

from __future__ import annotations

import pytest
import torch

from hipbmm_inductor import cli, tuning
from hipbmm_inductor.tuning.untuned import read_untuned

from tests.support import tuning_fakes as fakes


pytestmark = pytest.mark.usefixtures("fake_backend")


def test_record_off_by_default(tuning_env):
    fakes.choose(*fakes.inputs())
    assert not (tuning_env / "untuned-cpu.csv").exists()
    assert tuning.counters()["recorded"] == 0


@pytest.mark.parametrize("how", ["env", "python"])
def test_record_each_shape_once(tuning_env, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("HIPBMM_TUNING_RECORD", "1")
    else:
        tuning.set_record(True)
    for _ in range(3):
        fakes.choose(*fakes.inputs(M=5))
        fakes.choose(*fakes.inputs(M=6))  # same bucket (8): same shape for tuning
        fakes.choose(*fakes.inputs(M=5, bias=torch.bfloat16))
    shapes, bad = read_untuned(str(tuning_env / "untuned-cpu.csv"))
    assert bad == 0
    assert sorted((s.m, s.bias) for s in shapes) == [(5, "bfloat16"), (5, "none")]
    assert tuning.counters()["recorded"] == 2


def test_tune_from_recorded_file(tuning_env, capsys):
    tuning.set_record(True)
    fakes.choose(*fakes.inputs(M=5, N=64, K=64))
    fakes.choose(*fakes.inputs(M=40, N=128, K=64, bias=torch.float32))
    path = tuning_env / "untuned-cpu.csv"
    with open(path, "a") as f:
        f.write("garbage line\n")
    assert cli.main(["tune", "--from", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count(" tuned ") == 2, out
    # Now both shapes hit in cache mode, with no benchmarking.
    tuning.set_mode("cache")
    fakes.STATE.runs.clear()
    assert fakes.choose(*fakes.inputs(M=5, N=64, K=64)) == fakes.FASTEST_CORRECT
    assert fakes.choose(*fakes.inputs(M=40, N=128, K=64, bias=torch.float32)) == fakes.FASTEST_CORRECT
    assert fakes.STATE.runs == []


def test_tune_from_default_file_of_this_device(tuning_env, capsys):
    tuning.set_record(True)
    fakes.choose(*fakes.inputs(M=3))
    assert cli.main(["tune", "--from"]) == 0
    assert " tuned " in capsys.readouterr().out


def test_tune_from_missing_file_is_clear(tuning_env, capsys):
    assert cli.main(["tune", "--from", str(tuning_env / "nope.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_record_value_raises_on_every_call(tuning_env, monkeypatch):
    # It used to raise on the first call of a shape only, then run silently.
    monkeypatch.setenv("HIPBMM_TUNING_RECORD", "maybe")
    for _ in range(3):
        with pytest.raises(ValueError, match=r"HIPBMM_TUNING_RECORD='maybe': expected one of 1/0, true/false"):
            fakes.choose(*fakes.inputs(M=5))
    monkeypatch.setenv("HIPBMM_TUNING_RECORD", "1")
    fakes.choose(*fakes.inputs(M=5))  # a good value afterwards: recorded, as for any first miss
    assert tuning.counters()["recorded"] == 1
