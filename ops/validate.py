"""The one validation routine of ``hipb_mm_fp8``.

The fake implementation and every real backend call :func:`check_inputs` first, so fake and real
mode accept the same inputs and raise the same :class:`HipbmmInputError` with the same text. It
reads metadata only (dtype, shape, strides, device), never data, and never guards on the value
of M: every condition that involves M goes through ``torch._check_with``, which under dynamic
shapes becomes an equality guard or a runtime assert instead of a specialisation.

The contract is aiter ``hipb_mm(..., bpreshuffle=True)``'s rowwise contract (docs/contract.md, "aiter hipb_mm"):

- ``A``: fp8 (``float8_e4m3fn`` or ``float8_e4m3fnuz``), ``[M, K]``, row-major (strides ``(K, 1)``).
- ``B``: same fp8 flavour, ``[K, N]`` with strides ``(1, K)``: the transposed view of a
  preshuffled ``[N, K]`` weight (:func:`hipbmm_inductor.prepack_weight`).
- ``N >= 16``, ``N % 16 == 0``, ``K % 32 == 0`` (the shuffle's tile; aiter itself checks only
  ``K % 16``, and a ``K % 32 == 16`` weight cannot be shuffled).
- ``scale_a``: fp32 ``[M, 1]`` per token; ``scale_b``: fp32 ``[1, N]`` per channel; both with unit
  stride along their long dimension. 1-D and per-tensor scales are rejected, not normalised:
  aiter rejects them too ("Invalid scaling configuration"), and a silent reshape here would hide
  a layout bug in the caller. The compiler pass normalises the scale shapes real code emits.
- ``bias``: ``None`` or ``[N]`` in bf16 or fp32 with unit stride.
- ``out_dtype``: bf16 only: aiter's rowwise path requires it.
- Every tensor on one device.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .errors import HipbmmInputError
from .layout import BK, BN

__all__ = [
    "FP8_DTYPES", "OUT_DTYPES", "BIAS_DTYPES", "check_inputs", "check_out", "check_shape_supported", "is_valid_fast",
]

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e4m3fnuz)
OUT_DTYPES = (torch.bfloat16,)
BIAS_DTYPES = (torch.bfloat16, torch.float32)


def _require(cond, message: Callable[[], str]) -> None:
    if isinstance(cond, torch.SymBool):
        # A condition on a symbolic size (M): guard or defer to a runtime assert, never specialise.
        torch._check_with(HipbmmInputError, cond, message)
    elif not cond:
        raise HipbmmInputError(message())


def _tensor(x, arg: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise HipbmmInputError(f"{arg}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def _names(dtypes) -> str:
    return ", ".join(str(d) for d in dtypes)


def check_shape_supported(n: int, k: int) -> Optional[str]:
    """Why an ``[N, K]`` weight cannot be served (``None`` if it can). Shared with the pass."""
    if n < BN or n % BN != 0:
        return f"N must be >= {BN} and a multiple of {BN}, got N={n}"
    if k < BK or k % BK != 0:
        return f"K must be >= {BK} and a multiple of {BK} (the preshuffle tile), got K={k}"
    return None


def check_out(out, A, B) -> None:
    """Raise :class:`HipbmmInputError` unless ``out`` can take the result: a contiguous bf16
    ``[M, N]`` tensor on A's device. Checked where a given buffer is first written (a plan's first
    call, a copy into it), not on every call of a compiled graph, which allocated it itself."""
    out = _tensor(out, "out")
    want = (A.shape[0], B.shape[1])
    if tuple(out.shape) != want or out.dtype != torch.bfloat16 or not out.is_contiguous() or out.device != A.device:
        raise HipbmmInputError(
            f"out: expected a contiguous torch.bfloat16 tensor of shape {list(want)} on {A.device}, got "
            f"{out.dtype} {list(out.shape)} strides {list(out.stride())} on {out.device}"
        )


def check_inputs(A, B, scale_a, scale_b, bias=None, out_dtype=torch.bfloat16) -> None:
    """Raise :class:`HipbmmInputError` unless the arguments meet the contract above."""
    A = _tensor(A, "A")
    B = _tensor(B, "B")
    scale_a = _tensor(scale_a, "scale_a")
    scale_b = _tensor(scale_b, "scale_b")
    if bias is not None:
        bias = _tensor(bias, "bias")

    named = [("A", A), ("B", B), ("scale_a", scale_a), ("scale_b", scale_b)]
    if bias is not None:
        named.append(("bias", bias))
    for arg, t in named[1:]:
        if t.device != A.device:
            raise HipbmmInputError(
                f"{arg}: every tensor must be on one device; A is on {A.device}, {arg} is on {t.device}"
            )

    if A.dtype not in FP8_DTYPES:
        raise HipbmmInputError(f"A: dtype must be one of {_names(FP8_DTYPES)}, got {A.dtype}")
    if B.dtype != A.dtype:
        raise HipbmmInputError(f"B: dtype must equal A's fp8 flavour {A.dtype}, got {B.dtype}")
    if A.dim() != 2:
        raise HipbmmInputError(f"A: expected 2 dims [M, K], got shape {tuple(A.shape)}")
    if B.dim() != 2:
        raise HipbmmInputError(f"B: expected 2 dims [K, N], got shape {tuple(B.shape)}")

    M, K = A.shape
    KB, N = B.shape
    if K != KB:
        raise HipbmmInputError(f"B: dim 0 (K) must equal A's dim 1; A is {tuple(A.shape)}, B is {tuple(B.shape)}")
    why = check_shape_supported(N, K)
    if why is not None:
        raise HipbmmInputError(f"B: {why} (B is [K, N] = {tuple(B.shape)})")

    _require(
        A.stride(1) == 1 and A.stride(0) == K,
        lambda: f"A: must be row-major [M, K] with strides ({K}, 1), got strides {tuple(A.stride())}",
    )
    if tuple(B.stride()) != (1, K):
        raise HipbmmInputError(
            f"B: must be the [K, N] transposed view of a preshuffled [N, K] weight, strides "
            f"(1, {K}); got strides {tuple(B.stride())}. A .contiguous() copy destroys the "
            f"layout: build B with hipbmm_inductor.prepack_weight(w)"
        )

    if scale_a.dtype != torch.float32:
        raise HipbmmInputError(f"scale_a: dtype must be torch.float32, got {scale_a.dtype}")
    if scale_a.dim() != 2 or scale_a.shape[1] != 1:
        raise HipbmmInputError(
            f"scale_a: expected per-token scales of shape [M, 1], got shape {tuple(scale_a.shape)}; "
            f"1-D and per-tensor scales are not accepted (use scale_a.reshape(-1, 1), or "
            f"expand(M, 1).contiguous() for a per-tensor value)"
        )
    _require(
        scale_a.shape[0] == M,
        lambda: f"scale_a: dim 0 must equal M={M} (A is {tuple(A.shape)}), got shape {tuple(scale_a.shape)}",
    )
    _require(
        scale_a.stride(0) == 1,
        lambda: f"scale_a: must have unit stride along M ([M, 1] with stride(0) == 1), got strides {tuple(scale_a.stride())}",
    )

    if scale_b.dtype != torch.float32:
        raise HipbmmInputError(f"scale_b: dtype must be torch.float32, got {scale_b.dtype}")
    if scale_b.dim() != 2 or scale_b.shape[0] != 1 or scale_b.shape[1] != N:
        raise HipbmmInputError(
            f"scale_b: expected per-channel scales of shape [1, N] = [1, {N}], got shape "
            f"{tuple(scale_b.shape)}; 1-D, [N, 1] and per-tensor scales are not accepted (use "
            f"scale_b.reshape(1, -1))"
        )
    if scale_b.stride(1) != 1:
        raise HipbmmInputError(
            f"scale_b: must have unit stride along N ([1, N] with stride(1) == 1), got strides {tuple(scale_b.stride())}"
        )

    if bias is not None:
        if bias.dtype not in BIAS_DTYPES:
            raise HipbmmInputError(f"bias: dtype must be one of {_names(BIAS_DTYPES)}, got {bias.dtype}")
        if bias.dim() != 1 or bias.shape[0] != N:
            raise HipbmmInputError(f"bias: expected shape [N] = [{N}], got shape {tuple(bias.shape)}")
        if bias.stride(0) != 1:
            raise HipbmmInputError(f"bias: must be contiguous, got strides {tuple(bias.stride())}")

    if out_dtype not in OUT_DTYPES:
        raise HipbmmInputError(
            f"out_dtype: must be one of {_names(OUT_DTYPES)} (hipBLASLt's rowwise FP8 path writes "
            f"bf16 only), got {out_dtype}"
        )


_E4M3FN, _E4M3FNUZ, _F32, _BF16 = torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float32, torch.bfloat16


def is_valid_fast(A, B, scale_a, scale_b, bias=None, out_dtype=torch.bfloat16) -> bool:
    """True only if :func:`check_inputs` would accept these arguments; real (concrete) tensors only.

    The per-call fast path of the real implementation: one pass over the metadata, each
    attribute read once, no messages (~1.8 us on the CI machine against check_inputs' ~10).
    Anything it does not accept goes through :func:`check_inputs`, which raises the precise
    error (``tests/ops/test_validate.py`` property-tests that every input check_inputs rejects
    is rejected here too, and that everything it accepts is accepted here).
    """
    try:
        dtype = A.dtype
        M, K = A.shape
        KB, N = B.shape
        device = A.device
        if (out_dtype is not _BF16 or (dtype is not _E4M3FN and dtype is not _E4M3FNUZ) or B.dtype is not dtype
                or scale_a.dtype is not _F32 or scale_b.dtype is not _F32
                or K != KB or N % BN or N < BN or K % BK or K < BK
                or A.stride() != (K, 1) or B.stride() != (1, K)
                or scale_a.shape != (M, 1) or scale_a.stride()[0] != 1
                or scale_b.shape != (1, N) or scale_b.stride()[1] != 1
                or B.device != device or scale_a.device != device or scale_b.device != device):
            return False
        if bias is None:
            return True
        b_dtype = bias.dtype
        return ((b_dtype is _BF16 or b_dtype is _F32) and bias.shape == (N,) and bias.stride() == (1,)
                and bias.device == device)
    except (AttributeError, ValueError, TypeError, IndexError):  # not a tensor, or not 2-D
        return False
