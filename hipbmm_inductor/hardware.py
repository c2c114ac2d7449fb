"""What this platform is: the one place that asks torch about the GPU.

Every question about a device is answered from one record per device, probed on the first
question (one ``torch.cuda.get_device_properties`` call) and kept for the process: a device's
properties do not change while it runs, and these answers are read on hot paths (launch plans,
tuning keys), where a later question costs one dict read. Importing this module initialises
nothing; CUDA starts on the first question about a GPU.

| question | ROCm GPU | NVIDIA GPU | not a GPU (CPU) |
|---|---|---|---|
| ``is_rocm()`` | ``True`` (a ROCm build of torch) | ``False`` | the build's answer |
| ``device_kind(d)`` | ``"rocm"`` | ``"cuda"`` | ``d.type`` |
| ``arch(d)`` | ``"gfx942"`` (``gcnArchName`` without its features) | ``"sm_90"`` | ``None`` |
| ``cuda_capability(d)`` | ``None`` | ``(9, 0)`` | ``None`` |
| ``fp8_dtype(d)`` | ``float8_e4m3fnuz`` on gfx94x, else ``float8_e4m3fn`` | ``float8_e4m3fn`` | ``float8_e4m3fn`` |
| ``sm_count(d)`` | compute units | SMs | ``None`` |
| ``l2_bytes(d)`` | L2 as torch reports it | L2 | ``None`` |
| ``device_name(d)`` | ``"AMD Instinct MI300X"`` | ``"NVIDIA H100 80GB HBM3"`` | processor, else machine |

A ``cuda`` device with no GPU visible (a CPU-only build, or no device) answers like a CPU where
the table says ``None`` and for the fp8 flavour; ``device_name`` raises ``RuntimeError`` there,
as a name is what tuning files and reports record and there is none to give. A bare ``"cuda"``
means the current GPU, which can change: it is resolved on every call and never cached under
its bare name (tensors' devices always carry their index, so hot paths hit the cache).
"""

from __future__ import annotations

import platform
import threading
from dataclasses import dataclass
from typing import Optional, Union

import torch

__all__ = [
    "arch",
    "cuda_capability",
    "device_kind",
    "device_name",
    "fp8_dtype",
    "fp8_for_arch",
    "is_rocm",
    "l2_bytes",
    "sm_count",
]

DeviceLike = Union[torch.device, str]

# The fp8 format each GPU's matrix cores read, by architecture prefix (docs/contract.md, "aiter
# hipb_mm"): the MI300 family (gfx940/941/942) has AMD's fnuz encoding; MI350 (gfx950), NVIDIA
# and every other device the OCP e4m3fn one, which is also what a GPU without fp8 units is given.
_FP8_BY_ARCH_PREFIX = (("gfx94", torch.float8_e4m3fnuz),)
_OCP_FP8 = torch.float8_e4m3fn

# NOTE: torch >= 2.11 reports L2_cache_size on CUDA and ROCm builds alike; this is the answer for
# a properties object without the field (an out-of-tree build, a stand-in). 50 MiB is the L2 of
# the H100 and H200 the benchmarks ran on: rotating input sets sized from it still leave that L2.
_L2_FALLBACK_BYTES = 50 << 20


def is_rocm() -> bool:
    """Whether this torch is a ROCm build (``torch.version.hip`` set).

    Read on every call, not cached: one attribute read, and tests may patch ``torch.version``.
    """
    return bool(torch.version.hip)


def device_kind(device: DeviceLike) -> str:
    """``"cpu"``, ``"rocm"`` or ``"cuda"`` (NVIDIA), or the device type for anything else."""
    device = torch.device(device)
    if device.type == "cuda":
        return "rocm" if is_rocm() else "cuda"
    return device.type


def fp8_for_arch(arch: Optional[str]) -> torch.dtype:
    """The fp8 flavour an architecture computes in (``None``, no GPU: the OCP one)."""
    if arch is not None:
        for prefix, dtype in _FP8_BY_ARCH_PREFIX:
            if arch.startswith(prefix):
                return dtype
    return _OCP_FP8


@dataclass(frozen=True)
class _Facts:
    arch: Optional[str]
    name: Optional[str]  # None: a cuda device with no GPU behind it
    capability: Optional[tuple[int, int]]
    sm_count: Optional[int]
    l2_bytes: Optional[int]
    fp8: torch.dtype


_NO_GPU = _Facts(arch=None, name=None, capability=None, sm_count=None, l2_bytes=None, fp8=_OCP_FP8)

_lock = threading.Lock()
_cache: dict[DeviceLike, _Facts] = {}


def _rocm_arch(props) -> Optional[str]:
    # gcnArchName carries target features after a colon: "gfx942:sramecc+:xnack-".
    return getattr(props, "gcnArchName", "").split(":")[0] or None


def _probe(device: torch.device) -> _Facts:
    if device.type != "cuda":
        name = platform.processor() or platform.machine() or device.type
        return _Facts(arch=None, name=name, capability=None, sm_count=None, l2_bytes=None, fp8=_OCP_FP8)
    props = torch.cuda.get_device_properties(device)
    rocm = is_rocm()
    gpu_arch = _rocm_arch(props) if rocm else f"sm_{props.major}{props.minor}"
    return _Facts(
        arch=gpu_arch,
        name=props.name,
        # ROCm fills major/minor with a gfx version, which is no CUDA capability: arch() says it.
        capability=None if rocm else (props.major, props.minor),
        sm_count=props.multi_processor_count,
        l2_bytes=int(getattr(props, "L2_cache_size", _L2_FALLBACK_BYTES)),
        fp8=fp8_for_arch(gpu_arch),
    )


def _lookup(device: DeviceLike) -> _Facts:
    """The slow path of :func:`_facts`: normalise the device, probe it once, remember it."""
    key = device
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return _NO_GPU  # not cached: only error paths ask, and torch answers this cheaply
        if device.index is None:
            key = None  # the bare name follows the current GPU: cache only its resolved form
            device = torch.device("cuda", torch.cuda.current_device())
    facts = _cache.get(device)
    if facts is None:
        with _lock:
            facts = _cache.get(device)
            if facts is None:
                facts = _cache[device] = _probe(device)
    if key is not None and key != device:
        _cache[key] = facts  # "cuda:0" as a string: the next call with it is a dict read too
    return facts


def _facts(device: DeviceLike) -> _Facts:
    return _cache.get(device) or _lookup(device)


def arch(device: DeviceLike) -> Optional[str]:
    """``"gfx942"``-style on ROCm (``gcnArchName`` without its ``:`` features; ``None`` if torch
    reports none), ``"sm_<major><minor>"`` on NVIDIA, ``None`` where there is no GPU."""
    return _facts(device).arch


def cuda_capability(device: DeviceLike) -> Optional[tuple[int, int]]:
    """The compute capability ``(major, minor)`` of an NVIDIA GPU; ``None`` elsewhere."""
    return _facts(device).capability


def fp8_dtype(device: DeviceLike) -> torch.dtype:
    """The fp8 flavour the device computes in: :func:`fp8_for_arch` of its architecture."""
    return _facts(device).fp8


def sm_count(device: DeviceLike) -> Optional[int]:
    """Streaming multiprocessors (NVIDIA) or compute units (ROCm); ``None`` where there is no GPU."""
    return _facts(device).sm_count


def l2_bytes(device: DeviceLike) -> Optional[int]:
    """The GPU's L2 cache size as torch reports it (50 MiB when it reports none); ``None`` where
    there is no GPU. On MI300 the last-level cache is the larger Infinity Cache, which torch does
    not report: a caller sizing inputs to leave every cache decides that itself."""
    return _facts(device).l2_bytes


def device_name(device: DeviceLike) -> str:
    """The GPU's marketing name; for other devices the CPU's (``platform.processor()``, else
    ``platform.machine()``, else the device type). Raises ``RuntimeError`` for a ``cuda`` device
    when no GPU is visible."""
    name = _facts(device).name
    if name is None:
        raise RuntimeError(f"{device}: no GPU is visible to this PyTorch (torch.cuda.is_available() is False)")
    return name
