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
``custom_op`` wraps the kernel in Python autograd and aliasing-check layers, host time on every
call; at decode sizes without CUDA graphs a call's host time is the step time
(``benchmarks/results/cpu/op_overhead.json``: this op's whole dispatch and check cost 4.4 us there).
The op has no autograd formula: it is an inference op (under grad, PyTorch's autograd fallback
warns on backward).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .registry import backend_for
from .validate import check_inputs, check_out, is_valid_fast

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
# reaches the Python kernel without the composite key's extra hop. "CUDA" covers
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
            Inside ``torch.compile`` the same message arrives wrapped in Dynamo's
            ``TorchRuntimeError`` (it is raised while tracing, by the fake implementation).
        BackendUnavailableError: the backend named by ``HIPBMM_BACKEND`` cannot run here.

    NOTE: the check reads metadata only. A ``B`` with the right strides that was never shuffled
    (``W.t()`` of a plain weight) cannot be told from a prepacked one and gives wrong results:
    build ``B`` with :func:`hipbmm_inductor.prepack_weight`, or let the compiler pass do it.

    NOTE: a plain eager call on GPU tensors runs the op's kernel directly, with the same check;
    the dispatcher's way into a Python kernel costs about 2.5 us a call on the CI machine
    (``benchmarks/results/cpu/op_overhead.json``: the op's 4.4 us above a backend that does no
    work, less the check's 1.7 and the lookup's 0.2). Everything that needs the
    dispatcher still goes through the op: tracing (Dynamo, FX, ``torch.jit.trace``, fake tensors),
    tensor subclasses, torch function and dispatch modes, functorch transforms, the autograd
    profiler, and any input that requires grad while grad is on.
    """
    # NOTE: A.is_cuda, not A.device.type: the flag is read without building a device object.
    if (out_dtype is _BF16 and type(A) in _PLAIN and (A.is_cuda or A.device.type in DIRECT_ALSO)
            and not _is_compiling() and type(B) in _PLAIN and type(scale_a) in _PLAIN and type(scale_b) in _PLAIN
            and (bias is None or type(bias) in _PLAIN)
            and (not _grad_enabled() or not (A.requires_grad or B.requires_grad or scale_a.requires_grad
                                             or scale_b.requires_grad or (bias is not None and bias.requires_grad)))
            and not _dispatch_modes() and not _function_modes() and not _profiling() and not _functorch()
            and _jit_tracing() is None):
        return _hipb_mm_fp8_impl(A, B, scale_a, scale_b, bias)
    if not (isinstance(A, Tensor) and isinstance(B, Tensor) and isinstance(scale_a, Tensor)
            and isinstance(scale_b, Tensor) and (bias is None or isinstance(bias, Tensor))
            and isinstance(out_dtype, (torch.dtype, int)) and type(out_dtype) is not bool):  # an int: a ScalarType code
        # The dispatcher would refuse these with its schema error; the contract names the argument.
        check_inputs(A, B, scale_a, scale_b, bias, out_dtype)
    # Defaults are left out: every argument the dispatcher converts costs host time (0.7 us for
    # the two defaults, benchmarks/results/cpu/op_overhead.json, op_all_args).
    if out_dtype is _BF16:
        if bias is None:
            return _op(A, B, scale_a, scale_b)
        return _op(A, B, scale_a, scale_b, bias)
    try:
        return _op(A, B, scale_a, scale_b, bias, out_dtype)
    except ValueError:
        if type(out_dtype) is int:  # not a ScalarType code ("unsupported scalarType"): name the argument
            check_inputs(A, B, scale_a, scale_b, bias, out_dtype)
        raise


def hipb_mm_fp8_out(A: Tensor, B: Tensor, scale_a: Tensor, scale_b: Tensor, bias: Optional[Tensor],
                    out: Tensor) -> Tensor:
    """What a compiled graph calls for a ``hipb_mm_fp8`` node (:mod:`hipbmm_inductor.lowering.extern_call`):
    the GEMM into ``out``, a contiguous bf16 ``[M, N]`` buffer Inductor allocated.

    Unchecked, by design: the graph was traced through the op's fake implementation, which ran
    :func:`.validate.check_inputs` on these shapes, dtypes and strides, and the lowering pinned the
    strides. Not for other callers; use :func:`hipb_mm_fp8`.
    """
    if A.shape[0]:
        backend = backend_for(A.device)
        if getattr(backend, "writes_out", False):
            backend.run(A, B, scale_a, scale_b, bias, _BF16, out)  # checks out on a plan's first call
        else:  # the setting changed since the graph was compiled: the same result, one copy more
            check_out(out, A, B)
            out.copy_(backend.run(A, B, scale_a, scale_b, bias, _BF16))
    return out


_op = torch.ops.hipbmm.hipb_mm_fp8.default
# A plain eager call skips the dispatcher on GPUs (CUDA and ROCm), where host time per call
# matters; the CPU runs the reference oracle, whose call is not worth a second path. Device types
# added here take the direct path too (tests add "cpu" to check it there).
DIRECT_ALSO: set = set()
_BF16 = torch.bfloat16
_grad_enabled = torch.is_grad_enabled
_jit_tracing = torch._C._get_tracing_state
_PLAIN = (torch.Tensor, torch.nn.Parameter)
_is_compiling = torch.compiler.is_compiling
_dispatch_modes = torch._C._len_torch_dispatch_stack
_function_modes = torch._C._is_torch_function_mode_enabled
_profiling = torch._C._autograd._profiler_enabled
_functorch = torch._C._are_functorch_transforms_active
