"""Integrations with serving engines.

``vllm_plugin``: the ``vllm.general_plugins`` entry point (``register``) that puts
:class:`~hipbmm_inductor.integrations.vllm_kernel.HipbmmFp8ScaledMMLinearKernel` into vLLM's FP8
kernel selection. Nothing here imports vLLM until vLLM itself calls the entry point.
"""
