"""vLLM plugin: put hipb_mm_fp8 into vLLM's per-token x per-channel FP8 linear kernel selection.

vLLM runs every function of the entry-point group ``vllm.general_plugins`` in each of its
processes before it builds a model (``pyproject.toml`` declares ours). :func:`register` inserts
:class:`~.vllm_kernel.HipbmmFp8ScaledMMLinearKernel` at the head of vLLM's FP8 kernel priority
list for the current platform, where ``HIPBMM_VLLM_ENABLE`` allows it:

- ``auto`` (default): on ROCm only, where it comes before vLLM's own aiter kernels;
- ``1``: on every platform (CPU included: the CI test runs vLLM's CPU engine this way);
- ``0``: nowhere; vLLM selects kernels as if the plugin were not installed.

The kernel itself declines (``is_supported``) when no fast hipb_mm_fp8 backend serves the device,
so a listed kernel never makes vLLM slower; vLLM then takes the next kernel of its list. A user can
also leave it out by name with vLLM's own ``VLLM_DISABLED_KERNELS=HipbmmFp8ScaledMMLinearKernel``.

NOTE: the Inductor lowering pass is deliberately not added to vLLM's compile path. vLLM keeps
weights as graph inputs (no freezing), so a pass that rewrites ``_scaled_mm`` there would have to
shuffle the weight on every forward; the kernel instead prepacks once at load time
(``process_weights_after_loading``) and emits ``hipbmm::hipb_mm_fp8`` directly, which Dynamo and
Inductor keep as one opaque node in vLLM's compiled graph.
"""

from __future__ import annotations

import logging

from hipbmm_inductor import envs

__all__ = ["register", "is_registered"]

log = logging.getLogger("hipbmm_inductor")


def _fp8_kernel_lists():
    # vLLM 0.32: per-platform priority lists, read at every selection (docs/contract.md, "vLLM").
    from vllm.model_executor.kernels import linear as vllm_linear

    return vllm_linear._POSSIBLE_FP8_KERNELS


def register() -> None:
    """Entry point of ``vllm.general_plugins``: idempotent, safe in every vLLM process."""
    mode = envs.HIPBMM_VLLM_ENABLE
    if mode == "0":
        log.info("vLLM plugin: HIPBMM_VLLM_ENABLE=0, leaving vLLM's kernel selection unchanged")
        return
    # Past the HIPBMM_VLLM_ENABLE=0 return: a disabled plugin imports nothing of vLLM.
    from vllm.platforms import current_platform

    if mode == "auto" and not current_platform.is_rocm():
        log.debug("vLLM plugin: not ROCm (%s); HIPBMM_VLLM_ENABLE=1 enables it here", current_platform._enum)
        return
    # Imports vLLM's FP8 kernel modules: only where the plugin is enabled for this platform.
    from .vllm_kernel import HipbmmFp8ScaledMMLinearKernel

    kernels = _fp8_kernel_lists().setdefault(current_platform._enum, [])
    if HipbmmFp8ScaledMMLinearKernel in kernels:
        return  # vLLM loads plugins once per process, but a process may build several engines
    kernels.insert(0, HipbmmFp8ScaledMMLinearKernel)
    log.info(
        "vLLM plugin: %s is first among %s FP8 kernels", HipbmmFp8ScaledMMLinearKernel.__name__, current_platform._enum
    )


def is_registered() -> bool:
    """Whether this process's vLLM will consider the hipb_mm_fp8 kernel first."""
    # Not at the top, for register()'s sake: importing this module imports nothing of vLLM.
    from vllm.platforms import current_platform

    from .vllm_kernel import HipbmmFp8ScaledMMLinearKernel  # (vLLM too)

    kernels = _fp8_kernel_lists().get(current_platform._enum, [])
    return bool(kernels) and kernels[0] is HipbmmFp8ScaledMMLinearKernel
