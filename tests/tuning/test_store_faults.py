"""The store under faults: full disk, read-only folder, file modes, symlinks, killed writers,
duplicate keys, export. Real faults (tmpfs, bind mounts) where this machine allows mounting, and a
monkeypatched twin of each that always runs."""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hipbmm_inductor import cli, tuning
from hipbmm_inductor.tuning import store as store_mod
from hipbmm_inductor.tuning import files as files_mod
from hipbmm_inductor.tuning.key import device_info
from hipbmm_inductor.tuning.rows import Row, read_rows, render, row_line
from hipbmm_inductor.tuning.store import Store

from tests.support import tuning_fakes as fakes
from tests.support.faults import fill, mount_or_skip, read_only, small_tmpfs

ROOT = Path(__file__).resolve().parents[2]


def _row(n=64, config='{"cost": 3.0}', measured_at="2026-11-24T03:00:00Z", **kw) -> Row:
    info = device_info(torch.device("cpu"))
    fields = dict(
        backend="fake_tune", arch=info.arch, device_name=info.name, versions=info.versions,
        a_dtype="float8_e4m3fn", b_dtype="float8_e4m3fn", out_dtype="bfloat16", bias="none", n=n, k=64,
        m_bucket=8, extra="", config=config, time_us=3.0, default_time_us=5.0, measured_at=measured_at,
    )
    fields.update(kw)
    return Row(**fields)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "hipbmm_inductor"]


def _ns(path) -> set[int]:
    return {r.n for r in read_rows(str(path)).rows}


@pytest.fixture(autouse=True)
def _fake_timer():
    tuning.set_timer(fakes.fake_timer)


# -- a failed write is retried by the next one --------------------------------------------------
def test_full_disk_then_space_back_every_row_reaches_disk(tmp_path, caplog):
    mount_or_skip(tmp_path)
    with small_tmpfs(tmp_path / "disk", 256) as disk:
        folder = disk / "cache"
        tuning.set_cache_dir(str(folder))
        tuning.set_mode("online")
        assert fakes.choose(*fakes.inputs(N=64)) == fakes.FASTEST_CORRECT
        path = tuning.tuner().store.path("cpu")
        before = Path(path).read_text()
        filler = fill(disk)
        with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
            assert fakes.choose(*fakes.inputs(N=128)) == fakes.FASTEST_CORRECT  # tuned; cannot be written
            assert fakes.choose(*fakes.inputs(N=256)) == fakes.FASTEST_CORRECT
        assert tuning.tuner().store.memory_only
        assert len([w for w in _warnings(caplog) if "cannot be written" in w]) == 1  # one warning
        assert Path(path).read_text() == before  # the full disk never truncated the file
        assert not list(folder.glob("*.tmp"))
        filler.unlink()  # space is back
        assert fakes.choose(*fakes.inputs(N=512)) == fakes.FASTEST_CORRECT
        assert not tuning.tuner().store.memory_only
        assert _ns(path) == {64, 128, 256, 512}  # the rows tuned while the disk was full, too


def test_failed_write_is_retried_by_the_next_write(tuning_env, monkeypatch):
    tuning.set_mode("online")
    real_replace = os.replace

    def enospc(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod.os, "replace", enospc)
    fakes.choose(*fakes.inputs(N=64))
    store = tuning.tuner().store
    assert store.memory_only and not os.path.exists(store.path("cpu"))
    monkeypatch.setattr(store_mod.os, "replace", real_replace)
    fakes.choose(*fakes.inputs(N=128))
    assert not store.memory_only
    assert _ns(store.path("cpu")) == {64, 128}


def test_read_only_folder_then_writable_again(tmp_path, caplog):
    mount_or_skip(tmp_path)
    folder = tmp_path / "cache"
    folder.mkdir()
    tuning.set_cache_dir(str(folder))
    tuning.set_mode("online")
    with read_only(folder):
        with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
            assert fakes.choose(*fakes.inputs(N=64)) == fakes.FASTEST_CORRECT
        assert tuning.tuner().store.memory_only
        assert any("cannot be written" in w and "Read-only file system" in w for w in _warnings(caplog))
    fakes.choose(*fakes.inputs(N=128))  # the remount is gone: writable again
    assert _ns(tuning.tuner().store.path("cpu")) == {64, 128}


# -- modes, owners, links -----------------------------------------------------------------------
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_file_mode_follows_the_umask(tuning_env, umask, mode):
    old = os.umask(umask)
    try:
        s = Store(str(tuning_env))
        assert s.upsert("cpu", [_row()], "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(s.path("cpu")).st_mode) == mode


@pytest.mark.parametrize("mode", [0o644, 0o664, 0o640])
def test_existing_mode_is_kept(tuning_env, mode):
    s = Store(str(tuning_env))
    s.upsert("cpu", [_row(n=64)], "x")
    os.chmod(s.path("cpu"), mode)
    old = os.umask(0o077)  # a writer with a stricter umask must not narrow a shared file
    try:
        assert s.upsert("cpu", [_row(n=128)], "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(s.path("cpu")).st_mode) == mode
    assert _ns(s.path("cpu")) == {64, 128}


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="only root can give a file to another user")
def test_existing_owner_is_kept_where_allowed(tuning_env):
    s = Store(str(tuning_env))
    s.upsert("cpu", [_row(n=64)], "x")
    os.chown(s.path("cpu"), 65534, 65534)
    assert s.upsert("cpu", [_row(n=128)], "x")
    st = os.stat(s.path("cpu"))
    assert (st.st_uid, st.st_gid) == (65534, 65534)


def test_symlinked_cache_file_is_followed(tuning_env, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    target = shared / "team-tuning.csv"
    s = Store(str(tuning_env))
    os.makedirs(s.folder)
    s_path = Path(s.path("cpu"))
    os.symlink(target, s_path)
    assert s.upsert("cpu", [_row(n=64)], "x")
    assert s.upsert("cpu", [_row(n=128)], "x")
    assert s_path.is_symlink() and os.readlink(s_path) == str(target)  # still the link
    assert _ns(target) == {64, 128}
    assert not list(tuning_env.glob("*.tmp")) and not list(shared.glob("*.tmp"))


# -- killed writers -----------------------------------------------------------------------------
_HANGING_WRITER = """
import os, sys, time
from hipbmm_inductor.tuning import store
os.replace = lambda src, dst: time.sleep(3600)  # dies between writing the temp file and the rename
s = store.Store(sys.argv[1])
s.upsert("cpu", [store.Row(**eval(sys.argv[2]))], "x")
"""


def test_orphan_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tuning_env):
    s = Store(str(tuning_env))
    s.upsert("cpu", [_row(n=64)], "x")
    fields = _row(n=256).__dict__
    p = subprocess.Popen([sys.executable, "-c", _HANGING_WRITER, str(tuning_env), repr(fields)], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        deadline = time.monotonic() + 120
        while not list(tuning_env.glob("tuning-cpu.csv.*.tmp")):
            assert p.poll() is None and time.monotonic() < deadline, "the writer never wrote its temp file"
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert len(list(tuning_env.glob("*.tmp"))) == 1  # the killed writer's leftover
    assert s.upsert("cpu", [_row(n=128)], "x")
    assert not list(tuning_env.glob("*.tmp"))
    assert _ns(s.path("cpu")) == {64, 128}  # the killed writer's row never reached the file


def test_export_leaves_a_live_writers_temp_file_alone(tmp_path):
    dest = tmp_path / "ship.csv"
    live = Path(f"{dest}.{files_mod._HOST}.{os.getpid()}.0000.tmp")  # this process: alive
    dead = Path(f"{dest}.{files_mod._HOST}.{2**22 + 7}.0000.tmp")  # above pid_max's default: dead
    live.write_text("x")
    dead.write_text("x")
    store_mod.write_atomically(str(dest), "new\n")
    assert live.exists() and not dead.exists() and dest.read_text() == "new\n"


# -- duplicates ---------------------------------------------------------------------------------
def test_duplicate_keys_latest_measurement_wins_and_each_is_recorded(tuning_env, caplog):
    s = Store(str(tuning_env))
    os.makedirs(s.folder)
    newest = _row(config='{"cost": 2.0}', measured_at="2026-11-25T00:00:00Z")
    older = _row(config='{"cost": 9.0}', measured_at="2026-11-24T00:00:00Z")
    tie_first = _row(n=128, config='{"cost": 7.0}')
    tie_second = _row(n=128, config='{"cost": 6.0}')
    text = render([], "cpu", "x") + "".join(row_line(r) + "\n" for r in (newest, older, tie_first, tie_second))
    Path(s.path("cpu")).write_text(text)
    loaded = read_rows(s.path("cpu"))
    assert {r.n: r.config for r in loaded.rows} == {64: newest.config, 128: tie_second.config}
    assert len(loaded.duplicates) == 2
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        assert fakes.choose(*fakes.inputs(N=64)) == {"cost": 2.0}
    (warning,) = _warnings(caplog)
    assert "2 duplicated key(s)" in warning
    assert s.upsert("cpu", [_row(n=256)], "x")  # the next write records what it dropped
    rejected = Path(s.path("cpu") + ".rejected").read_text()
    assert rejected.count("duplicate key: kept the row measured at") == 2
    assert row_line(older) in rejected and row_line(tie_first) in rejected
    again = read_rows(s.path("cpu"))
    assert not again.duplicates and {r.n for r in again.rows} == {64, 128, 256}


def test_a_write_never_replaces_a_newer_row(tuning_env):
    s = Store(str(tuning_env))
    s.upsert("cpu", [_row(config='{"cost": 1.0}', measured_at="2026-11-25T00:00:00Z")], "x")
    assert s.upsert("cpu", [_row(config='{"cost": 8.0}', measured_at="2026-11-24T00:00:00Z")], "x")
    (row,) = read_rows(s.path("cpu")).rows
    assert row.config == '{"cost": 1.0}'
    assert "the file's row was measured later" in Path(s.path("cpu") + ".rejected").read_text()


# -- export -------------------------------------------------------------------------------------
def _two_tuned_rows():
    tuning.set_mode("online")
    fakes.choose(*fakes.inputs(N=64))
    fakes.choose(*fakes.inputs(N=128))


@pytest.mark.usefixtures("fake_backend")
def test_export_on_a_full_disk_keeps_the_old_file_whole(tmp_path, tuning_env, capsys):
    mount_or_skip(tmp_path)
    _two_tuned_rows()
    with small_tmpfs(tmp_path / "disk", 64) as disk:
        dest = disk / "ship.csv"
        dest.write_text("the previous export\n")
        filler = fill(disk)
        assert cli.main(["cache", "export", str(dest)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot write" in err and "No space left" in err
        assert dest.read_text() == "the previous export\n"  # not truncated
        assert not list(disk.glob("*.tmp"))
        filler.unlink()
        assert cli.main(["cache", "export", str(dest)]) == 0
        assert _ns(dest) == {64, 128}


@pytest.mark.usefixtures("fake_backend")
def test_export_failure_is_one_line_and_atomic(tmp_path, tuning_env, capsys, monkeypatch):
    _two_tuned_rows()
    assert cli.main(["cache", "export", str(tmp_path / "no" / "such" / "dir.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cache export: cannot write") and err.count("\n") == 1 and "Traceback" not in err
    dest = tmp_path / "ship.csv"
    dest.write_text("old\n")
    real_fsync = os.fsync

    def enospc_on_temp(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(store_mod.os, "fsync", enospc_on_temp)
    assert cli.main(["cache", "export", str(dest)]) == 2
    assert "No space left" in capsys.readouterr().err
    assert dest.read_text() == "old\n" and not list(tmp_path.glob("*.tmp"))


@pytest.mark.usefixtures("fake_backend")
def test_export_follows_a_symlink_and_keeps_the_mode(tmp_path, tuning_env):
    _two_tuned_rows()
    target = tmp_path / "real.csv"
    target.write_text("")
    os.chmod(target, 0o664)
    link = tmp_path / "ship.csv"
    os.symlink(target, link)
    assert cli.main(["cache", "export", str(link)]) == 0
    assert link.is_symlink() and _ns(target) == {64, 128}
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o664


# -- clear ------------------------------------------------------------------------------------
def test_rows_a_running_process_measured_before_a_clear_are_not_written_back(tuning_env, monkeypatch):
    running = Store(str(tuning_env))  # a serving process whose last write failed
    assert running.upsert("cpu", [_row(n=32, measured_at="2026-11-24T02:00:00Z")], "x")
    monkeypatch.setattr(store_mod.os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError(errno.EIO, "I/O")))
    assert not running.upsert("cpu", [_row(n=64, measured_at="2026-11-24T03:00:00Z")], "x")
    monkeypatch.undo()
    report = Store(str(tuning_env)).clear("cpu", "x")  # `cache clear`, from another process
    assert report.dropped == 1
    assert os.path.exists(running.path("cpu") + ".lock")
    import datetime

    from hipbmm_inductor.tuning.rows import read_rows

    cleared = read_rows(running.path("cpu")).cleared_at
    later = (datetime.datetime.strptime(cleared, "%Y-%m-%dT%H:%M:%SZ") + datetime.timedelta(seconds=1))
    # Stamps have one-second resolution: a row of the clear's own second may predate it, so it is
    # dropped too; one of the next second is kept.
    assert running.upsert("cpu", [_row(n=96, measured_at=cleared), _row(n=128, measured_at=later.strftime(
        "%Y-%m-%dT%H:%M:%SZ"))], "x")
    assert _ns(running.path("cpu")) == {128}  # the pending pre-clear row did not come back
    rejected = Path(running.path("cpu") + ".rejected").read_text()
    assert "measured before the cache was cleared" in rejected and row_line(_row(n=64)) in rejected
    assert row_line(_row(n=96, measured_at=cleared)) in rejected


def test_a_row_measured_right_after_a_clear_is_kept(tuning_env):
    """``cache clear`` then ``tune`` within one second: the new row outlives the clear (the clear
    returns once the clock has left its mark's second)."""
    from hipbmm_inductor.tuning.rows import now_utc, read_rows

    store = Store(str(tuning_env))
    assert store.upsert("cpu", [_row(n=32, measured_at="2026-11-24T02:00:00Z")], "x")
    store.clear("cpu", "x")
    fresh = _row(n=64, measured_at=now_utc())
    assert fresh.measured_at > read_rows(store.path("cpu")).cleared_at
    assert store.upsert("cpu", [fresh], "x")
    assert _ns(store.path("cpu")) == {64}


@pytest.mark.usefixtures("fake_backend")
def test_clear_untuned_empties_the_record_file_under_its_lock(tuning_env, capsys):
    tuning.set_record(True)
    fakes.choose(*fakes.inputs(M=3))
    path = tuning_env / "untuned-cpu.csv"
    assert path.stat().st_size > 0 and (tuning_env / "untuned-cpu.csv.lock").exists()
    tuning.set_mode("online")
    fakes.choose(*fakes.inputs(M=5, N=128))  # a tuning file to clear as well
    assert cli.main(["cache", "clear", "--untuned"]) == 0
    assert path.stat().st_size == 0 and (tuning_env / "untuned-cpu.csv.lock").exists()
    tuning.set_mode("cache")
    fakes.choose(*fakes.inputs(M=3, N=32))  # recording starts a fresh file, header included
    from hipbmm_inductor.tuning.untuned import read_untuned

    assert [s.n for s in read_untuned(str(path))[0]] == [32]


# -- the lock file's mode -------------------------------------------------------------------------
def test_lock_file_is_created_under_the_umask(tuning_env):
    old = os.umask(0o002)
    try:
        Store(str(tuning_env)).upsert("cpu", [_row()], "x")
    finally:
        os.umask(old)
    lock = Path(Store(str(tuning_env)).path("cpu") + ".lock")
    # Group-writable, as the umask allows: another user of a shared folder can take the lock too.
    assert stat.S_IMODE(lock.stat().st_mode) & 0o660 == 0o660


def test_filelock_before_4_gets_the_umask_mode(tuning_env, monkeypatch):
    import filelock

    seen = {}

    class Recorder:
        def __init__(self, path, timeout, **kwargs):
            seen.update(kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(filelock, "__version__", "3.12.4")
    monkeypatch.setattr(filelock, "FileLock", Recorder)
    old = os.umask(0o002)
    try:
        with store_mod.file_lock(str(tuning_env / "x.csv")) as locked:
            assert locked
    finally:
        os.umask(old)
    assert seen == {"mode": 0o664}  # not filelock 3's fixed 0o644
