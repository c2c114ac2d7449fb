"""The checks every candidate passes before it is rewritten (:data:`CHECKS`), and
:func:`classify`, which runs them: each returns ``None`` or the reason the candidate is skipped.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import torch
import torch.fx as fx
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from hipbmm_inductor.ops.validate import BIAS_DTYPES, FP8_DTYPES, check_shape_supported

from .gemm import Context, Extracted, Gemm, known, val

__all__ = ["CHECKS", "classify"]

log = logging.getLogger("hipbmm_inductor")


# ---------------------------------------------------------------------------------- checks
# Each check returns None (pass) or the reason the candidate is skipped. Order matters: the first
# reason is the one counted, so the cheap and most explanatory ones come first.


def fp8_operands(g: Gemm, ctx: Context) -> Optional[str]:
    a, b = val(g.a), val(g.b)
    if a is None or b is None:
        return "operands have no fake value"
    if a.dtype not in FP8_DTYPES or b.dtype != a.dtype:
        return f"operand dtypes {a.dtype} x {b.dtype} (need one of {', '.join(map(str, FP8_DTYPES))}, equal)"
    if a.dim() != 2 or b.dim() != 2:
        return "operands are not 2-D"
    return None


def frozen_weight(g: Gemm, ctx: Context) -> Optional[str]:
    if not (isinstance(g.b, fx.Node) and g.b.op == "get_attr"):
        return (
            "weight is a graph input, not a frozen constant (freezing folds module parameters and "
            "buffers only; a weight passed as an argument or computed in forward stays an input)"
        )
    return None


def rowwise_scales(g: Gemm, ctx: Context) -> Optional[str]:
    rows, n = g.rows, val(g.b).shape[1]
    sa, sb = val(g.scale_a), val(g.scale_b)
    if sa is None or sb is None:
        return "a scale is a Python scalar (per-tensor)"
    if not (sa.is_floating_point() and sb.is_floating_point()):
        return "scales are not floating point"
    if not (sa.dim() == 2 and known(sa.shape[0] == rows) and known(sa.shape[1] == 1)):
        if known(sa.numel() == 1):
            return "per-tensor scale_a (needs per-token [M, 1])"
        return f"scale_a shape {list(sa.shape)} is not per-token [M, 1]"
    if sb.dim() == 2 and known(sb.shape[0] == 1) and known(sb.shape[1] == n):
        pass
    elif sb.dim() == 1 and known(sb.shape[0] == n):
        pass  # 1-D per-channel: the rewrite views it as [1, N]
    elif known(sb.numel() == 1):
        return "per-tensor scale_b (needs per-channel [1, N])"
    else:
        return f"scale_b shape {list(sb.shape)} is not per-channel [1, N] or [N]"
    return None


def bf16_output(g: Gemm, ctx: Context) -> Optional[str]:
    if g.out_dtype != torch.bfloat16:
        return f"out_dtype {g.out_dtype} (hipBLASLt's rowwise FP8 path writes bf16 only)"
    return None


def supported_shape(g: Gemm, ctx: Context) -> Optional[str]:
    K, N = val(g.b).shape
    if not (isinstance(K, int) and isinstance(N, int)):
        return "weight has symbolic sizes"
    why = check_shape_supported(N, K)
    return f"unsupported weight shape: {why}" if why else None


def row_major_a(g: Gemm, ctx: Context) -> Optional[str]:
    a = val(g.a)
    if not (known(a.stride(1) == 1) and (known(a.stride(0) == a.shape[1]) or known(a.shape[0] <= 1))):
        return "activation is not row-major [M, K]"
    return None


def bias_ok(g: Gemm, ctx: Context) -> Optional[str]:
    if g.bias is None:
        return None
    v = val(g.bias)
    n = val(g.b).shape[1]
    if v is None or v.dim() != 1 or not known(v.shape[0] == n):
        return f"bias shape {list(v.shape) if v is not None else '?'} is not [N]"
    if v.dtype not in BIAS_DTYPES:
        return f"bias dtype {v.dtype} (need one of bf16, fp32)"
    return None


def _static_int(x) -> Optional[int]:
    """``x`` as an int where it is one (or a SymInt with a known value), else ``None``."""
    if isinstance(x, int):
        return x
    try:
        return int(x) if is_concrete_int(x) else None
    except Exception:
        return None


def backend_allows(g: Gemm, ctx: Context) -> Optional[str]:
    device = val(g.a).device
    backend = ctx.backend(device)
    if isinstance(backend, str):
        return backend
    if ctx.explicit:
        return None
    K, N = val(g.b).shape
    m = _static_int(g.rows)
    # NOTE: a backend may route by shape (`is_fast_for(device, n, k, m)`, m None when M is
    # symbolic); older backends only know a per-device answer (`is_fast(device)`).
    fast_for = getattr(backend, "is_fast_for", None)
    fast = fast_for(device, N, K, m) if callable(fast_for) else backend.is_fast(device)
    if not fast:
        where = f"{device.type} at N={N}, K={K}, M={'symbolic' if m is None else m}"
        return (
            f"backend {backend.name!r} is not known to beat the vendor GEMM on {where} "
            f"(HIPBMM_BACKEND=auto; name a backend to opt in)"
        )
    return None


CHECKS: tuple[Callable[[Gemm, Context], Optional[str]], ...] = (
    fp8_operands,
    frozen_weight,
    rowwise_scales,
    bf16_output,
    row_major_a,
    bias_ok,
    supported_shape,
    backend_allows,
)


def classify(g: Extracted, ctx: Context) -> Extracted:
    if not isinstance(g, Gemm):
        return g
    for check in CHECKS:
        reason = check(g, ctx)
        if reason is not None:
            return reason
    return g
