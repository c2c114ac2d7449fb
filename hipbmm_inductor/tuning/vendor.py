"""Vendor-side tuning on ROCm: forwarding ``HIP_ONLINE_TUNING`` to aiter/hipBLASLt.

aiter's ``hipb_mm`` tunes solution indices itself when ``HIP_ONLINE_TUNING`` is set in the
process environment before hipBLASLt initialises (SPEC section 3). Users who want that (rather
than, or before, this package's own cache) set ``HIPBMM_HIP_ONLINE_TUNING=1`` or call
:func:`enable_vendor_online_tuning`; the aiter backend calls :func:`forward_hip_online_tuning`
just before ``hipb_create_extension()`` and :func:`note_hipblaslt_initialised` right after.

Its limits are aiter's, not ours: results go to ``./hip_online_tuning_res.csv`` in the working
directory, only M <= 512 is tuned, and tuning on a shape first seen during CUDA-graph capture
breaks the capture. ``docs/tuning.md`` compares the two.
"""

from __future__ import annotations

import logging
import os

from hipbmm_inductor import envs

__all__ = ["enable_vendor_online_tuning", "forward_hip_online_tuning", "note_hipblaslt_initialised"]

log = logging.getLogger("hipbmm_inductor")

_state = {"hipblaslt_initialised": False, "warned_late": False}


def note_hipblaslt_initialised() -> None:
    """Called by the aiter backend once ``hipb_create_extension()`` has run in this process."""
    _state["hipblaslt_initialised"] = True


def forward_hip_online_tuning() -> bool:
    """Set ``HIP_ONLINE_TUNING=1`` when ``HIPBMM_HIP_ONLINE_TUNING`` asks for it.

    Returns whether vendor online tuning is on for this process. A ``HIP_ONLINE_TUNING`` the
    user set themselves is respected either way.
    """
    if envs.is_set("HIP_ONLINE_TUNING"):
        return bool(envs.HIP_ONLINE_TUNING)
    if not envs.HIPBMM_HIP_ONLINE_TUNING:
        return False
    if _state["hipblaslt_initialised"] and not _state["warned_late"]:
        _state["warned_late"] = True
        log.warning(
            "hipbmm_inductor: HIPBMM_HIP_ONLINE_TUNING was requested after hipBLASLt initialised in "
            "this process; set it before the first GEMM for hipBLASLt to pick it up"
        )
    # NOTE: this writes, not reads, the environment: the whole point is that aiter's C++ side
    # reads HIP_ONLINE_TUNING from the process environment, which no Python override reaches.
    os.environ["HIP_ONLINE_TUNING"] = "1"
    log.info(
        "hipbmm_inductor: HIP_ONLINE_TUNING=1 forwarded to aiter/hipBLASLt; it writes its results to %s",
        os.path.join(os.getcwd(), "hip_online_tuning_res.csv"),
    )
    return True


def enable_vendor_online_tuning() -> bool:
    """Python equivalent of ``HIPBMM_HIP_ONLINE_TUNING=1``; forwards it at once."""
    envs.set_override("HIPBMM_HIP_ONLINE_TUNING", True)
    return forward_hip_online_tuning()
