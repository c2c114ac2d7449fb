"""Whether ``aiter`` may serve and can serve ``hipb_mm_fp8`` in this process: the user's switches
(vLLM's own under vLLM, ``HIPBMM_USE_AITER`` elsewhere) and the import of ``aiter`` itself. The
hardware checks and the per-process extension are :mod:`.aiter_backend`'s."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Optional

from hipbmm_inductor import envs

__all__ = ["VLLM_FLAGS", "under_vllm", "switch_reason", "aiter_installed", "import_aiter"]

# vLLM's switches for its hipBLASLt linear path (docs/contract.md, "vLLM"): all on, or aiter is off there.
VLLM_FLAGS = ("VLLM_ROCM_USE_AITER", "VLLM_ROCM_USE_AITER_LINEAR", "VLLM_ROCM_USE_AITER_LINEAR_HIPBMM")


def under_vllm() -> bool:
    """Whether this process runs vLLM: then vLLM's own aiter switches decide (docs/contract.md, "vLLM")."""
    return sys.modules.get("vllm") is not None


def switch_reason() -> Optional[str]:
    """Why the user's switches keep aiter off (``None`` when they allow it)."""
    if under_vllm():
        off = [name for name in VLLM_FLAGS if not getattr(envs, name)]
        if off:
            return (
                "running under vLLM, whose switches for its hipBLASLt linear path are off ("
                + ", ".join(f"{name}=0" for name in off)
                + "; vLLM's default for VLLM_ROCM_USE_AITER is 0)"
            )
        return None
    if not envs.HIPBMM_USE_AITER:
        return "HIPBMM_USE_AITER=0"
    return None


def aiter_installed() -> bool:
    if "aiter" in sys.modules:
        return sys.modules["aiter"] is not None
    try:
        return importlib.util.find_spec("aiter") is not None
    except (ImportError, ValueError):
        return False


def import_aiter():
    """The ``aiter`` module, or the reason it cannot serve ``hipb_mm``."""
    try:
        aiter = importlib.import_module("aiter")
    except Exception as e:  # a broken build raises more than ImportError (JIT, missing .so)
        return None, f"aiter is not importable ({type(e).__name__}: {e})"
    missing = [f for f in ("hipb_mm", "hipb_create_extension") if not callable(getattr(aiter, f, None))]
    if missing:
        version = getattr(aiter, "__version__", "unknown version")
        return None, f"aiter ({version}) does not expose {', '.join(missing)}"
    return aiter, None
