"""hipbmm_inductor.lowering: Inductor passes that rewrite scaled-mm patterns into hipb_mm_fp8."""

from __future__ import annotations

from hipbmm_inductor import envs

__all__ = ["enable", "disable", "is_enabled"]


def is_enabled() -> bool:
    return bool(envs.HIPBMM_LOWERING)


def enable() -> None:
    """Python equivalent of ``HIPBMM_LOWERING=1``."""
    envs.set_override("HIPBMM_LOWERING", True)


def disable() -> None:
    """Python equivalent of ``HIPBMM_LOWERING=0``."""
    envs.set_override("HIPBMM_LOWERING", False)
