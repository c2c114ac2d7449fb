"""Real faults for the store tests: a full disk (a tiny tmpfs) and a read-only folder (a bind mount).

Needs root and a kernel that lets it mount (CI containers often do not): ``mount_or_skip`` skips
the test otherwise, and each fault also has a monkeypatched twin that always runs. Every mount is
undone when the context exits, even if the test fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)


def can_mount(probe: Path) -> bool:
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe.mkdir(parents=True, exist_ok=True)
    if _run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)).returncode != 0:
        return False
    _run("umount", "-l", str(probe))
    return True


def mount_or_skip(tmp_path: Path) -> None:
    if not can_mount(tmp_path / ".mount_probe"):
        pytest.skip("cannot mount here (needs root and mount permission); the monkeypatched twin covers this")


@contextmanager
def small_tmpfs(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` KiB at ``path``: writes past that fail with ENOSPC, as on a full disk."""
    path.mkdir(parents=True, exist_ok=True)
    r = _run("mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0777", "tmpfs", str(path))
    assert r.returncode == 0, r.stderr
    try:
        yield path
    finally:
        _run("umount", "-l", str(path))


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; returns the filler (delete it to free)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (4096, 1):  # whole pages, then the last bytes
            while True:
                try:
                    if os.write(fd, b"\0" * chunk) == 0:
                        break
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` bind-mounted read-only onto itself (root cannot write it either: EROFS)."""
    r = _run("mount", "--bind", str(path), str(path))
    assert r.returncode == 0, r.stderr
    try:
        r = _run("mount", "-o", "remount,bind,ro", str(path))
        assert r.returncode == 0, r.stderr
        yield path
    finally:
        _run("umount", "-l", str(path))
