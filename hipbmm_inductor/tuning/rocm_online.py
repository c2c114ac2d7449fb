"""Vendor-side tuning on ROCm: forwarding ``HIP_ONLINE_TUNING`` to aiter/hipBLASLt.

aiter's ``hipb_mm`` tunes hipBLASLt solution indices itself when ``HIP_ONLINE_TUNING`` is ``1``
or ``true`` in the process environment: its C++ side reads the variable with ``getenv`` on every
GEMM call (``gradlib/csrc/hipbsolgemm.cu``), so a Python override cannot reach it, and for every
GEMM with M <= 512 it **replaces the caller's solution index** with the one in its
``./hip_online_tuning_res.csv`` (tuning inline when the CSV has none). Users who want that
(rather than this package's own cache) set ``HIPBMM_HIP_ONLINE_TUNING=1`` or call
:func:`enable_vendor_online_tuning`; the aiter backend calls :func:`forward_hip_online_tuning`
once, just before its first GEMM, so that the environment is written before any GEMM thread
reads it.

While it is on, aiter's choice wins for M <= 512 and the aiter backend passes -1 there (see
``docs/rocm.md``); the backend learns of a change through :func:`add_listener`. Its limits are
aiter's, not ours: results go to ``./hip_online_tuning_res.csv`` in the working directory, only
M <= 512 is tuned, and tuning on a shape first seen during CUDA-graph capture breaks the capture.
``docs/tuning.md`` compares the two.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from hipbmm_inductor import envs

__all__ = ["add_listener", "enable_vendor_online_tuning", "forward_hip_online_tuning"]

log = logging.getLogger("hipbmm_inductor")

# Called after this module writes HIP_ONLINE_TUNING: the aiter backend drops the launch plans
# that snapshotted the old value.
_listeners: list[Callable[[], None]] = []


def add_listener(callback: Callable[[], None]) -> None:
    """Call ``callback()`` whenever this module changes ``HIP_ONLINE_TUNING`` (once per callback)."""
    if callback not in _listeners:
        _listeners.append(callback)


def forward_hip_online_tuning() -> bool:
    """Set ``HIP_ONLINE_TUNING=1`` when ``HIPBMM_HIP_ONLINE_TUNING`` asks for it.

    Returns whether vendor online tuning is on for this process. A ``HIP_ONLINE_TUNING`` the
    user set themselves is respected either way.
    """
    if envs.is_set("HIP_ONLINE_TUNING"):
        return bool(envs.HIP_ONLINE_TUNING)
    if not envs.HIPBMM_HIP_ONLINE_TUNING:
        return False
    # NOTE: this writes, not reads, the environment: the whole point is that aiter's C++ side
    # reads HIP_ONLINE_TUNING from the process environment, which no Python override reaches.
    os.environ["HIP_ONLINE_TUNING"] = "1"
    log.info(
        "hipbmm_inductor: HIP_ONLINE_TUNING=1 forwarded to aiter/hipBLASLt; it picks the solution of "
        "every GEMM with M <= 512 itself and writes its results to %s",
        os.path.join(os.getcwd(), "hip_online_tuning_res.csv"),
    )
    for callback in list(_listeners):
        callback()
    return True


def enable_vendor_online_tuning() -> bool:
    """Python equivalent of ``HIPBMM_HIP_ONLINE_TUNING=1``; forwards it at once.

    aiter reads the variable on every GEMM, so it applies from the next call even after GEMMs
    have run; call it before starting threads that run GEMMs (writing the environment while
    another thread reads it is not safe in C).
    """
    envs.set_override("HIPBMM_HIP_ONLINE_TUNING", True)
    return forward_hip_online_tuning()
