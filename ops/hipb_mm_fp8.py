"""``torch.ops.hipbmm.hipb_mm_fp8``: FP8 GEMM on a preshuffled weight, per-token x per-channel.

    out[m, n] = cast_{out_dtype}( sum_k A[m, k] * W[n, k]   (fp32 accumulation)
                                  * scale_a[m, 0] * scale_b[0, n] + bias[n] )

where ``B = prepack_weight(W)`` is the ``[K, N]`` view of ``W`` in aiter's (16, 16) preshuffled
layout. This is what AMD's ``hipb_mm(A, B, -1, bias, bf16, scaleA, scaleB, None, bpreshuffle=True)``
computes. The contract (dtypes, shapes, strides) lives in :mod:`.validate`; the backends in
:mod:`.registry`. The op itself only validates, picks the backend for the device and calls it, so
backends plug in without touching this definition.

Registration is an opaque op: Inductor does not trace into it, so the aiter, Triton and reference
backends all sit behind one node that a compiler pass can insert. It is tagged
``needs_exact_strides``: a node inserted by a pass has no ``eager_input_vals``, and without the
tag Inductor would be free to hand it a re-laid-out ``B`` (docs/contract.md, "Inductor").

NOTE: registered with ``torch.library.Library.define`` + ``impl`` rather than
``torch.library.custom_op``. Both give the same schema, tags and fake implementation, but
``custom_op`` wraps the kernel in Python autograd and aliasing-check layers that cost about 12 us
per call on the CI machine (2 us this way); at decode sizes without CUDA graphs a call's host
time is the step time (``benchmarks/op_overhead.py`` measures each layer).
The op has no autograd formula: it is an inference op on fp8 tensors, which cannot require grad.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .registry import backend_for
from .validate import check_inputs, is_valid_fast

__all__ = ["hipb_mm_fp8"]

_TAGS = (
    torch.Tag.needs_exact_strides if hasattr(torch.Tag, "needs_exact_strides") else torch.Tag.needs_fixed_stride_order,
    torch.Tag.pt2_compliant_tag,
)

_lib = torch.library.Library("hipbmm", "FRAGMENT")  # noqa: TOR901  (kept alive by the module)
_lib.define(
    "hipb_mm_fp8(Tensor A, Tensor B, Tensor scale_a, Tensor scale_b, Tensor? bias=None, "
    "ScalarType out_dtype=bfloat16) -> Tensor",
    tags=_TAGS,
)


def _hipb_mm_fp8_impl(A, B, scale_a, scale_b, bias=None, out_dtype=torch.bfloat16):
    if not is_valid_fast(A, B, scale_a, scale_b, bias, out_dtype):
        check_inputs(A, B, scale_a, scale_b, bias, out_dtype)  # raises the precise error
    if A.shape[0] == 0:
        return A.new_empty((0, B.shape[1]), dtype=out_dtype)
    return backend_for(A.device).run(A, B, scale_a, scale_b, bias, out_dtype)


# NOTE: registered per device key rather than CompositeExplicitAutograd: the dispatcher then
# reaches the Python kernel ~0.6 us sooner per call (benchmarks/op_overhead.py). "CUDA" covers
# ROCm builds too; CPU runs the reference and interpreted-Triton backends.
for _key in ("CPU", "CUDA"):
    _lib.impl("hipb_mm_fp8", _hipb_mm_fp8_impl, _key)


@torch.library.register_fake("hipbmm::hipb_mm_fp8", lib=_lib)
def _hipb_mm_fp8_fake(A, B, scale_a, scale_b, bias=None, out_dtype=torch.bfloat16):
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
    # Defaults are left out: every argument the dispatcher converts costs host time (~0.4 us).
    if out_dtype is torch.bfloat16:
        if bias is None:
            return _op(A, B, scale_a, scale_b)
        return _op(A, B, scale_a, scale_b, bias)
    return _op(A, B, scale_a, scale_b, bias, out_dtype)


_op = torch.ops.hipbmm.hipb_mm_fp8.default
