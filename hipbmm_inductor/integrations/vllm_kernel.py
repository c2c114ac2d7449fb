"""``HipbmmFp8ScaledMMLinearKernel``: vLLM's FP8 linear layer on ``hipbmm::hipb_mm_fp8``.

For a layer with dynamic per-token activation scales and per-channel weight scales (vLLM's
``fp8`` / compressed-tensors ``FP8_DYNAMIC`` checkpoints), vLLM quantises the activation and calls
``apply_scaled_mm``; this kernel answers with

    hipb_mm_fp8(A [M, K] fp8, B = prepack_weight(W) [K, N] view, As [M, 1], Bs [1, N], bias, bf16)

The weight is transposed-and-shuffled once, at load time (:meth:`process_weights_after_loading`),
exactly the storage vLLM's ``AiterHipbMMPerTokenFp8ScaledMMLinearKernel`` keeps; the backend
behind the op (aiter on MI3xx, Triton, reference) is hipbmm_inductor's choice for the device.

Compared with vLLM's own aiter kernel it checks ``K % 32`` (the preshuffle tile; vLLM checks only
``K % 16``, and a ``K % 32 == 16`` layer passes there and then fails), and it works wherever a
hipb_mm_fp8 backend does, so its selection can be tested on vLLM's CPU engine.

Importing this module imports vLLM: only :mod:`.vllm_plugin` does, from vLLM's entry point.
"""

from __future__ import annotations

import torch
from vllm.model_executor.kernels.linear.scaled_mm.ScaledMMLinearKernel import (
    FP8ScaledMMLinearKernel,
    FP8ScaledMMLinearLayerConfig,
)
from vllm.model_executor.layers.quantization.utils.quant_utils import QuantKey, kFp8DynamicTokenSym
from vllm.model_executor.utils import replace_parameter
from vllm.platforms import current_platform

from hipbmm_inductor import envs
from hipbmm_inductor.ops import registry
from hipbmm_inductor.ops.errors import BackendUnavailableError
from hipbmm_inductor.ops.hipb_mm_fp8 import hipb_mm_fp8
from hipbmm_inductor.ops.layout import prepack_weight
from hipbmm_inductor.ops.validate import check_shape_supported

__all__ = ["HipbmmFp8ScaledMMLinearKernel"]


def _device() -> torch.device:
    # vLLM's device type: "cuda" on ROCm and NVIDIA, "cpu" on its CPU platform.
    return torch.device(current_platform.device_type)


class HipbmmFp8ScaledMMLinearKernel(FP8ScaledMMLinearKernel):
    """Per-token x per-channel FP8 GEMM through ``torch.ops.hipbmm.hipb_mm_fp8``."""

    @classmethod
    def is_supported(cls, compute_capability: int | None = None) -> tuple[bool, str | None]:
        mode = envs.HIPBMM_VLLM_ENABLE
        if mode == "0":
            return False, "is disabled by HIPBMM_VLLM_ENABLE=0"
        if mode == "auto" and not current_platform.is_rocm():
            return False, "runs on ROCm only unless HIPBMM_VLLM_ENABLE=1"
        device = _device()
        try:
            backend = registry.backend_for(device)
        except BackendUnavailableError as e:
            return False, f"has no hipb_mm_fp8 backend on {device}: {e}"
        if mode == "auto" and envs.HIPBMM_BACKEND == "auto" and not backend.is_fast(device):
            # The reference backend (or an unmeasured one) would be slower than vLLM's own kernels.
            return False, (
                f"would run on the {backend.name!r} backend, not known to beat vLLM's kernels on "
                f"{device}; set HIPBMM_BACKEND or HIPBMM_VLLM_ENABLE=1 to use it anyway"
            )
        return True, None

    @classmethod
    def can_implement(cls, c: FP8ScaledMMLinearLayerConfig) -> tuple[bool, str | None]:
        act = c.activation_quant_key.scale
        weight = c.weight_quant_key.scale
        if not act.group_shape.is_per_token() or act.static:
            return False, "requires dynamic per-token activation scales"
        if not weight.group_shape.is_per_channel():
            return False, "requires per-channel weight scales"
        if c.out_dtype is not torch.bfloat16:
            return False, f"requires bfloat16 output, got {c.out_dtype}"
        if c.weight_shape is None:
            return False, "requires the weight shape"
        n, k = c.weight_shape
        why = check_shape_supported(n, k)
        if why is not None:
            return False, f"cannot hold this weight in the preshuffled layout: {why}"
        return True, None

    def input_quant_key(self) -> QuantKey | None:
        # Consumes pre-quantised per-token fp8 activations, as vLLM's aiter hipb_mm kernel does.
        return kFp8DynamicTokenSym

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        w_name, w_s_name, *_ = self.layer_param_names
        w, w_s, *_ = self._get_layer_params(layer)
        # vLLM hands over the [K, N] transposed view of the checkpoint's [N, K] weight.
        n = w.shape[1]
        packed = prepack_weight(w.t().contiguous())  # [K, N] view, strides (1, K): keep it a view
        replace_parameter(layer, w_name, torch.nn.Parameter(packed, requires_grad=False))
        if w_s.numel() != n:
            raise ValueError(
                f"{type(self).__name__}: expected {n} per-channel weight scales, got shape {tuple(w_s.shape)}"
            )
        scale_b = w_s.detach().reshape(1, n).to(torch.float32).contiguous()
        replace_parameter(layer, w_s_name, torch.nn.Parameter(scale_b, requires_grad=False))

    def apply_scaled_mm(
        self,
        *,
        A: torch.Tensor,
        B: torch.Tensor,
        out_dtype: torch.dtype,
        As: torch.Tensor,
        Bs: torch.Tensor,
        bias: torch.Tensor | None,
        output_shape: list,
    ) -> torch.Tensor:
        # Per-token scales arrive as [M, 1] (or [M] from some fused quant kernels): the op takes
        # exactly [M, 1] contiguous, and both forms reshape to it without a copy.
        As = As.reshape(-1, 1)
        return hipb_mm_fp8(A, B, As, Bs, bias, out_dtype).view(*output_shape)
