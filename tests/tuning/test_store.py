"""The CSV store: versions, upsert, damaged files, unwritable folders, crash safety."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hipbmm_inductor import tuning
from hipbmm_inductor.tuning import store as store_mod
from hipbmm_inductor.tuning import files as files_mod
from hipbmm_inductor.tuning.key import device_info
from hipbmm_inductor.tuning.rows import HEADER, Row, read_rows, render
from hipbmm_inductor.tuning.store import Store

from tests.support import tuning_fakes as fakes


def _row(n=64, config='{"cost": 3.0}', versions=None, device_name=None, m_bucket=8, **kw) -> Row:
    info = device_info(torch.device("cpu"))
    fields = dict(
        backend="fake_tune", arch=info.arch, device_name=device_name or info.name,
        versions=versions or info.versions, a_dtype="float8_e4m3fn", b_dtype="float8_e4m3fn",
        out_dtype="bfloat16", bias="none", n=n, k=64, m_bucket=m_bucket, extra="", config=config,
        time_us=3.0, default_time_us=5.0, measured_at="2026-11-24T03:00:00Z",
    )
    fields.update(kw)
    return Row(**fields)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "hipbmm_inductor"]


@pytest.fixture(autouse=True)
def _fake_timer():
    tuning.set_timer(fakes.fake_timer)


def test_round_trip_and_upsert(tuning_env):
    s = Store(str(tuning_env))
    info = device_info(torch.device("cpu"))
    assert s.upsert("cpu", [_row(n=64), _row(n=128)], info.versions)
    assert s.upsert("cpu", [_row(n=64, config='{"cost": 4.0}')], info.versions)  # same key: replaced
    rows = {r.n: r for r in read_rows(s.path("cpu")).rows}
    assert set(rows) == {64, 128}
    assert rows[64].config_dict() == {"cost": 4.0}
    text = open(s.path("cpu")).read()
    assert f"# written_by={info.versions}" in text and HEADER in text


def test_rows_from_other_versions_kept_but_unused(tuning_env):
    s = Store(str(tuning_env))
    info = device_info(torch.device("cpu"))
    old = info.versions.replace("torch=", "torch=0.0.")
    s.upsert("cpu", [_row(versions=old, config='{"cost": 1.0}'), _row(n=128, device_name="Another CPU")], info.versions)
    tuning.set_mode("cache")
    assert fakes.choose(*fakes.inputs(N=64)) is fakes.DEFAULT  # other torch version: not used
    assert fakes.choose(*fakes.inputs(N=128)) is fakes.DEFAULT  # other device name: not used
    # Tuning here adds a row for the current versions; the old row stays in the file.
    tuning.set_mode("online")
    fakes.choose(*fakes.inputs(N=64))
    versions = sorted(r.versions for r in read_rows(s.path("cpu")).rows if r.n == 64)
    assert versions == sorted([old, info.versions])


def test_current_rows_are_used(tuning_env):
    Store(str(tuning_env)).upsert("cpu", [_row(config='{"cost": 2.5, "split_k": 2}')], "x")
    assert fakes.choose(*fakes.inputs(M=7)) == {"cost": 2.5, "split_k": 2}


@pytest.mark.parametrize("damage", ["truncated", "garbage_rows", "wrong_header", "binary_junk", "bad_values",
                                    "deep_json"])
def test_damaged_file_one_warning_good_rows_kept(tuning_env, caplog, damage):
    s = Store(str(tuning_env))
    info = device_info(torch.device("cpu"))
    s.upsert("cpu", [_row(n=64), _row(n=128), _row(n=256)], info.versions)
    path = s.path("cpu")
    text = open(path).read()
    last_n = int(text.splitlines()[-1].split(",")[8])
    if damage == "truncated":
        text = text[: -25]  # cuts the last row inside its timestamp
    elif damage == "garbage_rows":
        text += "this is not,a row\n,,,,\n\"unterminated\n"
    elif damage == "wrong_header":
        text = text.replace(HEADER, "preshuffle,use_rowwise,trans_a,m,n,k,algo_index")
    elif damage == "binary_junk":
        text += "\x00\x01\x02 junk \ufffd\n"
    elif damage == "bad_values":
        text += ",".join(_row(n=512).to_fields()).replace(",512,", ",-512,") + "\n"
        text += ",".join(_row(n=1024).to_fields()).replace('"{', "{").replace('}"', "}").replace('{"cost": 3.0}', "{not json") + "\n"
    elif damage == "deep_json":  # a config nested past the JSON decoder's recursion limit
        fields = _row(n=512).to_fields()
        fields[[i for i, f in enumerate(fields) if f.startswith("{")][0]] = '{"a":' * 5000 + "1" + "}" * 5000
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow(fields)
        text += line.getvalue()
    with open(path, "w") as f:
        f.write(text)

    tuning.reload()
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        tuning.set_mode("cache")
        for n in (64, 128, 256):
            fakes.choose(*fakes.inputs(N=n))
        tuning.set_mode("online")
        fakes.choose(*fakes.inputs(N=32))  # a write: merges with the damaged file
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "skipped" in warnings[0] and path in warnings[0]
    rows = read_rows(path)
    kept = {r.n for r in rows.rows}
    expected = {64, 128, 256, 32} - ({last_n} if damage == "truncated" else set())
    assert kept == expected
    assert rows.bad_lines == [] and not rows.problems  # the rewrite is clean
    # Nothing from the damaged file is lost: unreadable lines went to the .rejected file.
    if damage != "wrong_header":
        assert os.path.getsize(path + ".rejected") > 0
    else:
        assert "preshuffle,use_rowwise" in open(path + ".rejected").read()


def test_hits_from_damaged_file(tuning_env):
    s = Store(str(tuning_env))
    s.upsert("cpu", [_row(n=64, config='{"cost": 2.0}')], "x")
    with open(s.path("cpu"), "a") as f:
        f.write("garbage\n")
    tuning.reload()
    assert fakes.choose(*fakes.inputs(N=64)) == {"cost": 2.0}


def test_unwritable_folder_memory_only_one_warning(tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    tuning.set_cache_dir(str(blocker / "cache"))  # cannot be created: its parent is a file
    tuning.set_mode("online")
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        assert fakes.choose(*fakes.inputs(N=64)) == fakes.FASTEST_CORRECT
        assert fakes.choose(*fakes.inputs(N=128)) == fakes.FASTEST_CORRECT
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "memory" in warnings[0]
    assert tuning.tuner().store.memory_only
    fakes.STATE.runs.clear()
    assert fakes.choose(*fakes.inputs(N=64)) == fakes.FASTEST_CORRECT  # kept in memory
    assert fakes.STATE.runs == []


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_folder(tmp_path, caplog):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        tuning.set_cache_dir(str(folder))
        tuning.set_mode("online")
        with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
            assert fakes.choose(*fakes.inputs()) == fakes.FASTEST_CORRECT
        assert len(_warnings(caplog)) == 1
    finally:
        folder.chmod(0o700)


def test_crash_during_write_keeps_old_file(tuning_env, monkeypatch):
    s = Store(str(tuning_env))
    s.upsert("cpu", [_row(n=64)], "x")
    before = open(s.path("cpu")).read()

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(store_mod.os, "replace", crash)
    assert not s.upsert("cpu", [_row(n=128)], "x")
    assert open(s.path("cpu")).read() == before  # old contents intact
    assert not [p for p in os.listdir(tuning_env) if p.endswith(".tmp")]  # no temp litter
    # The row that could not be written is still known to this process, and written later.
    assert {r.n for r in s.load("cpu")} == {64, 128}
    monkeypatch.undo()
    s.memory_only = False  # e.g. the disk came back; the next write carries the pending row
    assert s.upsert("cpu", [_row(n=256)], "x")
    assert {r.n for r in read_rows(s.path("cpu")).rows} == {64, 128, 256}


def test_each_tuned_shape_is_on_disk_immediately(tuning_env):
    tuning.set_mode("online")
    fakes.choose(*fakes.inputs(N=64))
    # No flush at exit needed: a process killed right now has already stored the result.
    assert {r.n for r in read_rows(Store(str(tuning_env)).path("cpu")).rows} == {64}


def test_filelock_missing_warns_once_and_still_writes(tuning_env, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "filelock", None)  # import filelock -> ImportError
    monkeypatch.setitem(files_mod._filelock_warning, "given", False)
    s = Store(str(tuning_env))
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        assert s.upsert("cpu", [_row(n=64)], "x")
        assert s.upsert("cpu", [_row(n=128)], "x")
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "filelock" in warnings[0]
    assert {r.n for r in read_rows(s.path("cpu")).rows} == {64, 128}


@pytest.mark.parametrize("config", ["[1, 2]", '"x"', "nan"])
def test_non_object_config_rejected(config):
    with pytest.raises(ValueError):
        Row.from_fields(_row().to_fields()[:12] + [config] + _row().to_fields()[13:])


def test_non_dict_default_is_a_clear_error():
    tuning.set_mode("online")
    with pytest.raises(TypeError, match="default must be a config dict"):
        fakes.choose(*fakes.inputs(), default=[1, 2])  # type: ignore[arg-type]


# -- properties: the CSV round-trips any text, and truncation never invents a row ---------------
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), min_size=1,
                max_size=20).filter(lambda s: s.strip() == s and s.strip())


@given(names=st.lists(_text, min_size=1, max_size=4), extra=st.text(alphabet="abc-,\"' ", max_size=8),
       value=st.one_of(st.integers(-5, 1 << 40), st.text(max_size=10), st.booleans()))
def test_rows_round_trip(tmp_path_factory, names, extra, value):
    rows = [_row(n=16 * (i + 1), device_name=name, extra=extra, config=json.dumps({"k": value, "name": name}))
            for i, name in enumerate(names)]
    path = tmp_path_factory.mktemp("rt") / "t.csv"
    path.write_text(render(rows, "cpu", "v=1"), encoding="utf-8")
    loaded = read_rows(str(path))
    assert not loaded.problems
    assert sorted(loaded.rows, key=lambda r: r.n) == sorted(
        [Row.from_fields(r.to_fields()) for r in rows], key=lambda r: r.n)


@given(cut=st.integers(0, 2000))
def test_truncation_never_invents_rows(tmp_path_factory, cut):
    rows = [_row(n=16 * (i + 1), config=json.dumps({"BLOCK_M": 16 * i, "num_warps": 4})) for i in range(5)]
    text = render(rows, "cpu", "v=1")
    path = tmp_path_factory.mktemp("cut") / "t.csv"
    path.write_bytes(text.encode()[: cut % (len(text) + 1)])
    loaded = read_rows(str(path))
    assert set(loaded.rows) <= set(rows)


def test_damaged_bytes_are_reported_but_a_replacement_character_is_not(tmp_path):
    good = _row(device_name="GPU \ufffd edition")  # U+FFFD is a character like any other
    path = tmp_path / "t.csv"
    path.write_text(render([good], "cpu", "v=1"), encoding="utf-8")
    loaded = read_rows(str(path))
    assert not loaded.problems and [r.device_name for r in loaded.rows] == ["GPU \ufffd edition"]
    path.write_bytes(path.read_bytes().replace(b"GPU", b"GP\xff"))  # one damaged byte
    assert "bytes that are not UTF-8" in read_rows(str(path)).problems


def test_a_line_that_is_not_utf8_goes_to_rejected_with_its_bytes_not_rewritten(tmp_path):
    """A row whose device name an editor saved as Latin-1: not loaded with U+FFFD in place of the
    byte (its key would change on the next write, for good), but kept, escaped, in .rejected; the
    file's other rows are untouched."""
    good, other = _row(n=32), _row(n=64, device_name="AMD Radeon PRO caf\u00e9")
    s = Store(str(tmp_path))
    s.upsert("cpu", [good, other], "x")
    path = s.path("cpu")
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw.replace("caf\u00e9".encode(), b"caf\xe9"))
    loaded = read_rows(path)
    assert loaded.rows == [good] and "bytes that are not UTF-8" in loaded.problems
    s.upsert("cpu", [_row(n=96)], "x")
    assert {r.n for r in read_rows(path).rows} == {32, 96}
    with open(path, "rb") as f:
        assert b"\xef\xbf\xbd" not in f.read()  # no U+FFFD written in place of the byte
    with open(path + ".rejected", encoding="utf-8") as f:
        assert "caf\\xe9" in f.read()


def test_a_file_in_another_format_is_read_but_never_rewritten(tmp_path, caplog):
    """A cache written by a release with format 2: its rows are read where the header allows, but
    a write (which would render format 1 and could drop what format 2 added) is refused: the
    process keeps its result in memory, and the file is left byte for byte."""
    s = Store(str(tmp_path))
    s.upsert("cpu", [_row(n=32)], "x")
    path = s.path("cpu")
    with open(path, "rb") as f:
        raw = f.read().replace(b"format 1.", b"format 2.")
    with open(path, "wb") as f:
        f.write(raw)
    loaded = read_rows(path)
    assert [r.n for r in loaded.rows] == [32] and loaded.newer_format == "2"
    assert any("format 2" in p for p in loaded.problems)
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        assert not s.upsert("cpu", [_row(n=64)], "x")  # memory only
    with open(path, "rb") as f:
        assert f.read() == raw
    said = [r.getMessage() for r in caplog.records if "format 2" in r.getMessage()]
    # The warning names the file's format and what to do, not a folder that cannot be written.
    assert any("folder of its own" in m for m in said) and not any("writable" in m for m in said), said
