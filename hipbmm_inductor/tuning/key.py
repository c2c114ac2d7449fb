"""What a tuned result is keyed by, and how that key is built cheaply on every GEMM call.

A result is only valid for the exact software and hardware that measured it: a Triton config
tuned under one Triton release, or a hipBLASLt solution index from one hipBLASLt build, may be
slow or simply invalid under another (docs/contract.md, "aiter online tuning": aiter's CSV keys on none of these and
silently reuses indices across releases). So the full key is

    backend, device architecture, device name, library versions,
    A dtype, B dtype, out dtype, bias (dtype or "none"), N, K, M bucket, extra key

The device part (architecture, name, versions) is computed once per device and folded into the
table a process looks shapes up in (:class:`.tuner.Tuner`), so the per-call key is only a tuple
of values already on the tensors (dtypes as ``torch.dtype`` objects, the M bucket by bit
arithmetic): no string formatting on the hot path, about 1 us per call in all.
"""

from __future__ import annotations

import functools
import glob
import importlib.metadata
import os
import re
import threading
from dataclasses import dataclass
from typing import Optional

import torch

from hipbmm_inductor import __version__, hardware

__all__ = [
    "DeviceInfo",
    "device_info",
    "library_versions",
    "m_bucket",
    "dtype_name",
    "parse_dtype",
    "safe_arch",
]


def m_bucket(m: int) -> int:
    """The M bucket of a GEMM: the next power of two (1, 2, 4, ..., 4096, 8192, ...).

    NOTE: powers of two follow gemlite and vLLM's CUDA-graph batch sizes: tile choices change
    at about these boundaries, and a serving process sees hundreds of distinct token counts, so
    tuning each M exactly would never finish.
    """
    return 1 if m <= 1 else 1 << (m - 1).bit_length()


def dtype_name(dtype: Optional[torch.dtype]) -> str:
    """``torch.float8_e4m3fn`` -> ``"float8_e4m3fn"``; ``None`` (no bias) -> ``"none"``."""
    return "none" if dtype is None else str(dtype).removeprefix("torch.")


def parse_dtype(name: str) -> Optional[torch.dtype]:
    """Inverse of :func:`dtype_name`; raises ``ValueError`` for a name this torch does not know."""
    if name == "none":
        return None
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype name {name!r}")
    return dtype


def _dist_version(name: str) -> Optional[str]:
    # importlib.metadata reads the installed package's metadata without importing it: asking
    # for triton's version must not import triton (seconds, and it may be broken).
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _hipblaslt_version() -> Optional[str]:
    """hipBLASLt's version from its shared library's file name (``libhipblaslt.so.1.0.60300``).

    hipBLASLt has no Python package and torch does not report its version, but the versioned
    soname is present in both torch's ROCm wheels (``torch/lib``) and ROCm installs.
    """
    if not hardware.is_rocm():
        return None
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    for folder in (torch_lib, "/opt/rocm/lib"):
        names = sorted(glob.glob(os.path.join(folder, "libhipblaslt.so.*")), key=len, reverse=True)
        for path in names:
            m = re.search(r"libhipblaslt\.so\.([0-9][0-9.]*)$", path)
            if m:
                return m.group(1)
    return None


@functools.lru_cache(maxsize=1)
def library_versions() -> tuple[tuple[str, str], ...]:
    """Versions that invalidate tuned results, as ordered ``(name, version)`` pairs."""
    versions = [("hipbmm_inductor", __version__), ("torch", torch.__version__)]
    triton = _dist_version("triton") or _dist_version("pytorch-triton") or _dist_version("pytorch-triton-rocm")
    if triton:
        versions.append(("triton", triton))
    if hardware.is_rocm():
        versions.append(("hip", str(torch.version.hip)))
        hipblaslt = _hipblaslt_version()
        if hipblaslt:
            versions.append(("hipblaslt", hipblaslt))
        aiter = _dist_version("amd-aiter") or _dist_version("aiter")
        if aiter:
            versions.append(("aiter", aiter))
    elif torch.version.cuda:
        versions.append(("cuda", str(torch.version.cuda)))
    return tuple(versions)


def versions_string(versions: tuple[tuple[str, str], ...]) -> str:
    """``hipbmm_inductor=0.1.0;torch=2.11.0;...``: the form stored in the CSV."""
    return ";".join(f"{k}={v}" for k, v in versions)


def safe_arch(arch: str) -> str:
    """An architecture name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", arch) or "unknown"


@dataclass(frozen=True)
class DeviceInfo:
    arch: str  # gfx942, sm_90, cpu
    name: str  # "AMD Instinct MI300X", "NVIDIA H100 80GB HBM3", CPU model
    versions: str  # versions_string(library_versions())


_lock = threading.Lock()
_infos: dict[torch.device, DeviceInfo] = {}


def device_info(device: torch.device) -> DeviceInfo:
    """Architecture, name and library versions of ``device`` (probed once per device)."""
    info = _infos.get(device)
    if info is None:
        name = hardware.device_name(device)  # raises for a cuda device without a GPU: nothing to key
        # A key is a string: a ROCm GPU whose torch reports no architecture is keyed as unknown.
        arch = (hardware.arch(device) or "gfx_unknown") if device.type == "cuda" else device.type
        info = DeviceInfo(arch=arch, name=name, versions=versions_string(library_versions()))
        with _lock:
            _infos[device] = info
    return info
