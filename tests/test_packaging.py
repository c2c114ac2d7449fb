"""The built wheel: only `hipbmm_inductor` lands top-level, and it imports and runs from a venv."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _local_setuptools_ok() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 68  # pyproject's build requirement


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)]
    if _local_setuptools_ok():
        # Build with what is installed: machines without a package index (the GPU image) can too.
        cmd.insert(4, "--no-build-isolation")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = out.glob("hipbmm_inductor-*.whl")
    return whl


def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"hipbmm_inductor"}, top
    assert "hipbmm_inductor/ops/hipb_mm_fp8.py" in names
    assert "hipbmm_inductor/ops/layout.py" in names
    assert "hipbmm_inductor/lowering/__init__.py" in names
    assert not any(n.startswith(("ops/", "lowering/", "tests/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[vllm.general_plugins]" in text and "[console_scripts]" in text


def test_wheel_carries_the_license(wheel):
    """The Apache-2.0 text travels in the wheel's metadata, and METADATA names the licence."""
    z = zipfile.ZipFile(wheel)
    # setuptools >= 77 files it under dist-info/licenses/, older releases at the top of dist-info.
    (lic,) = [n for n in z.namelist() if ".dist-info/" in n and n.rsplit("/", 1)[-1] == "LICENSE"]
    assert z.read(lic) == (ROOT / "LICENSE").read_bytes()
    assert b"Apache License" in z.read(lic)[:200] and b"Version 2.0, January 2004" in z.read(lic)[:200]
    meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "License: Apache-2.0" in meta.splitlines() or "License-Expression: Apache-2.0" in meta.splitlines(), meta[:800]
    assert "License-File: LICENSE" in meta.splitlines(), meta[:800]


def test_wheel_installs_and_runs_in_fresh_venv(wheel, tmp_path):
    import os

    import torch

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    # Reuse this interpreter's torch through a plain path entry (not a site dir: its .pth hooks,
    # an editable install of ours among them, stay off). --system-site-packages would miss torch
    # where this interpreter is itself a venv (the GPU image).
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_torch_from_parent.pth").write_text(str(Path(torch.__file__).resolve().parents[1]) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, str(wheel)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    script = (
        "import torch, hipbmm_inductor as hi, hipbmm_inductor.ops as ops, sys\n"
        "assert ops.__file__.startswith(sys.prefix), ops.__file__\n"
        "w = torch.randn(32, 64).to(torch.float8_e4m3fn)\n"
        "a = torch.randn(3, 64).to(torch.float8_e4m3fn)\n"
        "out = hi.hipb_mm_fp8(a, hi.prepack_weight(w), torch.ones(3, 1), torch.ones(1, 32))\n"
        "ref = (a.float() @ w.float().t()).to(torch.bfloat16)\n"
        "assert out.shape == (3, 32) and (out.float() - ref.float()).abs().max() <= ref.float().abs().max() * 2**-7\n"
        "import importlib.util as u\n"
        "assert u.find_spec('ops') is None and u.find_spec('lowering') is None\n"
        "print('ok')\n"
    )
    r = subprocess.run([str(py), "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


def test_source_checkout_on_pythonpath_imports_subpackages(tmp_path):
    """No install at all (`-S`: no site-packages hooks): ops/ and lowering/ still import."""
    import torch

    site = str(Path(torch.__file__).resolve().parents[1])
    script = (
        "import sys, hipbmm_inductor.ops as ops, hipbmm_inductor.lowering as low\n"
        f"assert ops.__file__.startswith({str(ROOT)!r}), ops.__file__\n"
        "import torch, hipbmm_inductor as hi\n"
        "assert torch.ops.hipbmm.hipb_mm_fp8 is not None and hi.is_enabled() in (True, False)\n"
        "print('ok')\n"
    )
    env = {"PYTHONPATH": f"{ROOT}:{site}", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
