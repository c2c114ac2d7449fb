"""A script of ``benchmarks/`` loaded as a module in a test. The scripts are not a package: each
is loaded by path, with ``benchmarks/`` importable while it loads so that one script's imports of
another (``from ab_hopper_build import load_build``) resolve, under a name no installed package
takes (``tables`` is also PyTables')."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(name: str) -> ModuleType:
    """``benchmarks/<name>`` (``"diag_decode.py"``) as module ``hipbmm_bench_<stem>``; its
    module-level code runs, its ``main`` does not."""
    path = BENCH / name
    spec = importlib.util.spec_from_file_location(f"hipbmm_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module
