"""`python -m hipbmm_inductor tune` and `cache show|clear|export|import`."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hipbmm_inductor import cli, envs, tuning
from hipbmm_inductor.cli.tune import parse_shape
from hipbmm_inductor.tuning.rows import read_rows
from hipbmm_inductor.tuning.store import Store

from tests.support import tuning_fakes as fakes

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("fake_backend")


def _tune(*shapes, extra=()):
    return cli.main(["tune", "--backend", "fake_tune", "--shapes", *shapes, *extra])


@pytest.mark.parametrize("text,dims", [("16x4096x4096", (16, 4096, 4096)), ("1X32X64", (1, 32, 64)), ("3,16,32", (3, 16, 32))])
def test_parse_shape(text, dims):
    assert parse_shape(text) == dims


@pytest.mark.parametrize("text", ["16x4096", "0x32x32", "ax32x32", "16x32x32x4"])
def test_bad_shape_names_the_rule(text, capsys):
    assert _tune(text) == 2
    err = capsys.readouterr().err
    assert f"--shapes: {text!r}" in err and ("MxNxK" in err or "positive" in err)


def test_tune_then_cached_and_settings_restored(tuning_env, capsys):
    assert tuning.get_mode() == "cache"
    assert _tune("8x64x64", "20x32x64", extra=["--bias", "bf16"]) == 0
    out = capsys.readouterr().out
    assert out.count(" tuned ") == 2
    assert tuning.get_mode() == "cache" and envs.HIPBMM_BACKEND == "auto"  # restored after the command
    assert _tune("8x64x64", extra=["--bias", "bf16"]) == 0
    assert " cached " in capsys.readouterr().out
    assert _tune("8x64x64", extra=["--bias", "bf16", "--force", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[0]["status"] == "tuned" and report[0]["config"] == fakes.FASTEST_CORRECT


def test_tune_untunable_backend_says_so(capsys):
    assert cli.main(["tune", "--backend", "reference", "--shapes", "4x32x32"]) == 0
    assert "not tunable" in capsys.readouterr().out


def test_show_json_and_text(tuning_env, capsys):
    _tune("8x64x64")
    capsys.readouterr()
    assert cli.main(["cache", "show", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["folder"] == str(tuning_env)
    (f,) = report["files"]
    assert f["usable_here"] == 1 and f["entries"][0]["config"] == fakes.FASTEST_CORRECT
    assert cli.main(["cache", "show"]) == 0
    assert "1 usable here" in capsys.readouterr().out


def test_export_import_round_trip(tuning_env, tmp_path, capsys):
    _tune("8x64x64", "64x128x64")
    shipped = tmp_path / "ship.csv"
    assert cli.main(["cache", "export", str(shipped)]) == 0
    assert cli.main(["cache", "clear"]) == 0
    cleared = read_rows(Store(str(tuning_env)).path("cpu"))
    assert cleared.rows == [] and cleared.cleared_at  # emptied and marked, not deleted
    tuning.set_mode("cache")
    assert fakes.choose(*fakes.inputs(M=8)) is fakes.DEFAULT
    assert cli.main(["cache", "import", str(shipped)]) == 0
    assert fakes.choose(*fakes.inputs(M=8)) == fakes.FASTEST_CORRECT  # import reloaded the tables
    assert len(read_rows(Store(str(tuning_env)).path("cpu")).rows) == 2


def test_import_merges_and_skips_bad_lines(tuning_env, tmp_path, capsys):
    _tune("8x64x64")
    other = tmp_path / "other.csv"
    assert cli.main(["cache", "export", str(other)]) == 0
    text = other.read_text().replace(",64,64,8,", ",256,64,8,") + "junk row\n"
    other.write_text(text)
    assert cli.main(["cache", "import", str(other)]) == 1  # a line was refused: not a clean import
    assert "refused 1 unreadable line" in capsys.readouterr().err
    assert {r.n for r in read_rows(Store(str(tuning_env)).path("cpu")).rows} == {64, 256}


def test_clear_stale_keeps_current_rows(tuning_env, capsys):
    _tune("8x64x64")
    s = Store(str(tuning_env))
    (row,) = read_rows(s.path("cpu")).rows
    old = row.__class__(**{**row.__dict__, "versions": "torch=1.0", "n": 512})
    s.upsert("cpu", [old], "x")
    assert cli.main(["cache", "clear", "--stale"]) == 0
    assert "removed 1 row" in capsys.readouterr().out
    assert {r.n for r in read_rows(s.path("cpu")).rows} == {64}
    # The dropped row is kept in .rejected, from where `cache import` brings it back.
    rejected = s.path("cpu") + ".rejected"
    assert "other library versions" in Path(rejected).read_text()
    assert cli.main(["cache", "import", rejected]) == 0
    assert {r.n for r in read_rows(s.path("cpu")).rows} == {64, 512}


def test_clear_stale_with_untuned_empties_the_record_files_too(tuning_env, capsys):
    tuning.set_record(True)
    fakes.choose(*fakes.inputs(M=3))
    record = tuning_env / "untuned-cpu.csv"
    assert record.stat().st_size > 0
    assert cli.main(["cache", "clear", "--stale", "--untuned"]) == 0
    assert record.stat().st_size == 0 and "emptied" in capsys.readouterr().out


def test_import_of_a_file_without_rows_says_so(tuning_env, tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert cli.main(["cache", "import", str(empty)]) == 1
    assert "no rows to import" in capsys.readouterr().err


def test_tune_fails_when_its_results_cannot_be_stored(tuning_env, monkeypatch, capsys):
    """A cache folder that cannot be written: the results would die with the command, so it
    says so and exits 1 (a script or CI job then notices)."""
    from hipbmm_inductor.tuning import store as store_mod

    monkeypatch.setattr(store_mod.Store, "_rewrite", lambda *a, **k: (_ for _ in ()).throw(OSError(13, "denied")))
    assert _tune("8x64x64") == 1
    err = capsys.readouterr().err
    assert "could not be written" in err and "1 tuned result(s) are lost" in err


def test_export_missing_arch_is_clear(capsys):
    assert cli.main(["cache", "export", "x.csv", "--arch", "gfx999"]) == 2
    assert "no tuning file for gfx999" in capsys.readouterr().err


def test_module_entry_point_subprocess(tmp_path):
    env = dict(os.environ, HIPBMM_TUNING_CACHE=str(tmp_path / "sub"))
    r = subprocess.run([sys.executable, "-m", "hipbmm_inductor", "cache", "show"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert str(tmp_path / "sub") in r.stdout
    assert not list(tmp_path.glob("*.csv"))  # nothing written to the working directory


def test_tune_reports_rows_with_a_backend_extra_key(monkeypatch, capsys):
    # Real backends put a kernel version in extra_key; the report must still find their row.
    original = fakes.choose
    monkeypatch.setattr(fakes, "choose", lambda *a, **k: original(*a, **{**k, "extra_key": "kernel-v2"}))
    assert _tune("8x64x64", extra=["--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["status"] == "tuned" and entry["config"] == fakes.FASTEST_CORRECT


def test_tune_refuses_a_bad_setting_before_tuning(tuning_env, monkeypatch, capsys):
    monkeypatch.setenv("HIPBMM_TUNING", "bogus")
    try:
        assert cli.main(["tune", "--backend", "reference", "--shapes", "4x32x32"]) == 2
    finally:
        monkeypatch.delenv("HIPBMM_TUNING")  # before the fixture's teardown reads it
    captured = capsys.readouterr()
    assert "HIPBMM_TUNING" in captured.err and "4x32x32" not in captured.out  # nothing was tuned first


@pytest.mark.parametrize("argv", [["cache", "show"], ["cache", "clear"], ["tune", "--shapes", "4x32x32"]])
def test_a_cache_path_that_is_a_file_is_refused(tuning_env, tmp_path, argv, capsys):
    f = tmp_path / "not_a_folder"
    f.write_text("x")
    assert cli.main([*argv, "--cache-dir", str(f)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert f.read_text() == "x"


def _record_file(tuning_env, backend: str, extras: list[str]):
    from hipbmm_inductor.tuning.key import device_info
    from hipbmm_inductor.tuning.untuned import UNTUNED_COLUMNS

    info = device_info(torch.device("cpu"))
    rows = [[backend, info.arch, info.name, info.versions, "float8_e4m3fn", "float8_e4m3fn", "bfloat16", "none",
             str(2 + i), "32", "64", extra, "test", "2026-01-01T00:00:00Z"] for i, extra in enumerate(extras)]
    path = tuning_env.parent / "recorded.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([UNTUNED_COLUMNS, *rows])
    return path


@pytest.mark.parametrize("extra,why", [
    ("preshuffled-v0/promoted/portable", "tuned for kernel 'preshuffled-v0'"),
    ("{v}/promoted/gluon", "recorded on the gluon kernel; the portable kernel runs this shape here"),
    ("{v}/sideways/portable", "is not <kernel version>/promoted|fast/gluon|portable"),
])
def test_triton_settings_for_a_recorded_tuning_key(extra, why, monkeypatch):
    from hipbmm_inductor.ops.triton_backend import KERNEL_VERSION, TritonBackend

    be = TritonBackend()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    for mode in ("promoted", "fast"):
        assert be.settings_for_extra(f"{KERNEL_VERSION}/{mode}/portable", torch.device("cpu"),
                                     torch.float8_e4m3fn) == {"HIPBMM_TRITON_ACCUMULATION": mode}
    with pytest.raises(ValueError, match=why.replace("(", r"\(").replace("|", r"\|")):
        be.settings_for_extra(extra.format(v=KERNEL_VERSION), torch.device("cpu"), torch.float8_e4m3fn)


def test_tune_from_applies_the_settings_that_reproduce_a_recorded_key(tuning_env, monkeypatch, capsys):
    """Shapes a backend recorded under its own tuning key are tuned under the settings that give
    that key (fake_tune keys rows with the accumulation setting it ran under), and put back after."""
    seen = []

    def settings_for_extra(extra, device, fp8):
        if extra == "unreproducible":
            raise ValueError("no setting here gives it")
        return {"HIPBMM_TRITON_ACCUMULATION": extra}

    from hipbmm_inductor.ops import registry

    backend = registry.get_backend("fake_tune")
    monkeypatch.setattr(backend, "settings_for_extra", settings_for_extra, raising=False)
    original = backend.run
    monkeypatch.setattr(backend, "run", lambda *a, **k: seen.append(envs.HIPBMM_TRITON_ACCUMULATION) or original(*a, **k))
    path = _record_file(tuning_env, "fake_tune", ["fast", "promoted", "unreproducible"])
    assert cli.main(["tune", "--from", str(path)]) == 0
    captured = capsys.readouterr()
    assert seen == ["fast", "promoted"] and envs.HIPBMM_TRITON_ACCUMULATION == "promoted"
    assert "skipping 4x32x64: tuning key 'unreproducible': no setting here gives it" in captured.err
    assert captured.out.count(" tuned ") == 2


def test_tune_from_says_when_every_shape_was_skipped(tuning_env, capsys):
    path = _record_file(tuning_env, "reference", ["a-key-reference-cannot-give"])
    assert cli.main(["tune", "--from", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nothing to tune: every shape in" in err and "cannot say which settings give it" in err


def test_tune_from_skips_a_shape_with_an_unknown_dtype(tuning_env, capsys):
    from hipbmm_inductor.tuning.key import device_info
    from hipbmm_inductor.tuning.untuned import UNTUNED_COLUMNS

    info = device_info(torch.device("cpu"))
    rows = [["reference", info.arch, info.name, info.versions, dtype, "float8_e4m3fn", "bfloat16", "none",
             "4", "32", "32", "", "test", "2026-01-01T00:00:00Z"] for dtype in ("float99", "float8_e4m3fn")]
    path = tuning_env.parent / "recorded.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([UNTUNED_COLUMNS, *rows])
    assert cli.main(["tune", "--from", str(path), "--backend", "reference"]) == 0
    captured = capsys.readouterr()
    assert "skipping 4x32x32" in captured.err and "float99" in captured.err


def test_an_abbreviated_option_is_refused_not_guessed(capsys):
    # `--m` is no option of tune; argparse would otherwise read it as --max-candidates.
    with pytest.raises(SystemExit) as e:
        cli.main(["tune", "--shapes", "4x32x32", "--m", "3"])
    assert e.value.code == 2 and "unrecognized arguments: --m" in capsys.readouterr().err
