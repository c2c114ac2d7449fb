"""``torch.ops.hipbmm.hipb_mm_fp8``: FP8 GEMM on a preshuffled weight, per-token x per-channel.

    out[m, n] = cast_{out_dtype}( sum_k A[m, k] * W[n, k]   (fp32 accumulation)
                                  * scale_a[m, 0] * scale_b[0, n] + bias[n] )

where ``B = prepack_weight(W)`` is the ``[K, N]`` view of ``W`` in aiter's (16, 16) preshuffled
layout. This is what AMD's ``hipb_mm(A, B, -1, bias, bf16, scaleA, scaleB, None, bpreshuffle=True)``
computes. The contract (dtypes, shapes, strides) lives in :mod:`.validate`; the backends in
:mod:`.registry`. The op itself only validates, picks the backend for the device and calls it, so
backends plug in without touching this definition.

Registration is an opaque ``custom_op``: Inductor does not trace into it, so the aiter, Triton
and reference backends all sit behind one node that a compiler pass can insert. It is tagged
``needs_exact_strides``: a node inserted by a pass has no ``eager_input_vals``, and without the
tag Inductor would be free to hand it a re-laid-out ``B`` (SPEC section 5).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .registry import backend_for
from .validate import check_inputs

__all__ = ["hipb_mm_fp8"]

_TAGS = (torch.Tag.needs_exact_strides,) if hasattr(torch.Tag, "needs_exact_strides") else (
    torch.Tag.needs_fixed_stride_order,
)


@torch.library.custom_op("hipbmm::hipb_mm_fp8", mutates_args=(), tags=_TAGS)
def _hipb_mm_fp8(
    A: Tensor,
    B: Tensor,
    scale_a: Tensor,
    scale_b: Tensor,
    bias: Optional[Tensor] = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> Tensor:
    check_inputs(A, B, scale_a, scale_b, bias, out_dtype)
    if A.shape[0] == 0:
        return A.new_empty((0, B.shape[1]), dtype=out_dtype)
    return backend_for(A.device).run(A, B, scale_a, scale_b, bias, out_dtype)


@_hipb_mm_fp8.register_fake
def _(A, B, scale_a, scale_b, bias=None, out_dtype=torch.bfloat16):
    check_inputs(A, B, scale_a, scale_b, bias, out_dtype)
    # Fresh, contiguous [M, N]: M stays symbolic under dynamic shapes.
    return A.new_empty((A.shape[0], B.shape[1]), dtype=out_dtype)


def hipb_mm_fp8(
    A: Tensor,
    B: Tensor,
    scale_a: Tensor,
    scale_b: Tensor,
    bias: Optional[Tensor] = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> Tensor:
    """Python entry point of ``torch.ops.hipbmm.hipb_mm_fp8`` (same arguments, same checks).

    Args:
        A: fp8 ``[M, K]`` activations, row-major.
        B: ``prepack_weight(W)`` for an fp8 ``[N, K]`` weight ``W`` (the same fp8 flavour as A).
        scale_a: fp32 ``[M, 1]`` per-token scales.
        scale_b: fp32 ``[1, N]`` per-channel scales.
        bias: optional ``[N]`` bf16 or fp32 bias, added in fp32 before the final cast.
        out_dtype: ``torch.bfloat16`` (the only output dtype hipBLASLt's rowwise path writes).

    Returns:
        A freshly allocated, contiguous ``[M, N]`` tensor of ``out_dtype``.

    Raises:
        HipbmmInputError: an argument breaks the contract; the message names it and the rule.
        BackendUnavailableError: the backend named by ``HIPBMM_BACKEND`` cannot run here.
    """
    return torch.ops.hipbmm.hipb_mm_fp8(A, B, scale_a, scale_b, bias, out_dtype)
