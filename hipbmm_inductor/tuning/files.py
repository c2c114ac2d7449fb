"""Writing a shared file safely: an exclusive lock across processes, and atomic replacement.

What :mod:`.store` builds on: :func:`file_lock` (``<path>.lock`` via ``filelock``, never deleted),
:func:`write_atomically` (a temporary file in the same folder, fsynced, then ``os.replace``d;
symlinks followed, the file's mode and owner kept, a new file under the umask; leftovers of
killed writers removed).
"""

from __future__ import annotations

import glob
import logging
import os
import secrets
import socket
import stat
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["file_lock", "write_atomically"]

log = logging.getLogger("hipbmm_inductor")

_filelock_warning = {"given": False}  # one warning per process


def _warn_filelock_missing_once() -> None:
    if not _filelock_warning["given"]:
        _filelock_warning["given"] = True
        log.warning(
            "hipbmm_inductor tuning: the 'filelock' package is not installed (pip install filelock, "
            "or from the checkout pip install -e '.[tune]'); writing the tuning cache without a lock, so processes writing "
            "the same file at the same moment may drop each other's new rows"
        )


def _umask() -> int:
    """The process's umask (only filelock releases before 4 need it, to create the lock file)."""
    try:  # Linux: readable without changing it
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # os.umask sets as it reads: put it straight back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_umask_lock = threading.Lock()


@contextmanager
def file_lock(path: str, timeout: float = 60.0) -> Iterator[bool]:
    """Exclusive lock on ``path`` across processes (``<path>.lock``, never deleted), via the filelock
    package; yields ``False`` when filelock is missing and nothing is locked."""
    try:
        import filelock  # optional (the `tune` extra): without it, no lock
    except ImportError:
        _warn_filelock_missing_once()
        yield False
        return
    # NOTE: filelock's FileLock is fcntl/msvcrt-based on local disks and degrades to a soft
    # (lock-file existence) lock on file systems without fcntl; both are released by the OS or
    # by the timeout if a holder crashes. filelock >= 4 creates the lock file under the umask when
    # no mode is given; earlier releases chmod it to their default 0o644, which locks out the
    # other users of a shared folder, so those get the umask's mode explicitly.
    kwargs = {}
    if int(filelock.__version__.split(".")[0]) < 4:
        kwargs["mode"] = (0o666 & ~_umask()) | 0o600
    with filelock.FileLock(path + ".lock", timeout=timeout, **kwargs):
        yield True


_HOST = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:64] or "host"


def _tmp_path(real: str) -> str:
    # Host and pid in the name: a writer without the lock (an export) can tell a dead writer's
    # leftover from a live one's file.
    return f"{real}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def _remove_orphans(real: str, locked: bool) -> None:
    """Delete temporary files of ``real`` left by killed writers.

    Under the file's lock no other writer of it is mid-write, so every one is an orphan; without
    the lock (exports, no filelock) only those of dead processes on this host are.
    """
    for tmp in glob.glob(glob.escape(real) + ".*.tmp"):
        if not locked:
            parts = tmp[len(real) + 1:].split(".")
            if len(parts) != 4 or parts[0] != _HOST or not parts[1].isdigit() or _alive(int(parts[1])):
                continue
        try:
            os.unlink(tmp)
            log.info("hipbmm_inductor tuning: removed %s, left by a writer that did not finish", tmp)
        except OSError:
            pass


def write_atomically(path: str, text: str, locked: bool = False) -> None:
    """Replace ``path``'s contents with ``text``: all of it or nothing, even on a full disk or a crash.

    A symlink is followed (the target is replaced, the link kept). An existing file keeps its mode
    (and owner, where allowed); a new one gets the umask's. ``locked``: the caller holds
    ``file_lock(path)``, so any temporary file of ``path`` is an orphan and is deleted.
    """
    real = os.path.realpath(path)
    folder = os.path.dirname(real) or "."
    _remove_orphans(real, locked)
    try:
        old = os.stat(real)
    except FileNotFoundError:
        old = None
    tmp = _tmp_path(real)
    # 0o666 through os.open: the kernel applies the umask (and a folder's default ACL), as for
    # any file the user creates. (tempfile.mkstemp would make it 0o600.)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            if old is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(old.st_mode))
                if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                    try:  # root (or a member of the group) can keep the owner; others cannot
                        os.fchown(f.fileno(), old.st_uid, old.st_gid)
                    except OSError:
                        pass
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (POSIX); not possible on every platform
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
