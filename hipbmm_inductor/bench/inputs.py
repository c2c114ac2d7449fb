"""Fresh random FP8 GEMM inputs for the benchmarks, rotated so that no timed call finds its
weight in cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from hipbmm_inductor.ops.layout import prepack_weight
from hipbmm_inductor.timing import rotations

__all__ = ["InputSet", "rotation", "random_inputs", "make_sets"]


@dataclass
class InputSet:
    """One call's arguments, with the plain weight beside its prepacked view (and bf16 copies for
    the ``F.linear`` comparison)."""

    A: torch.Tensor
    W: torch.Tensor  # plain [N, K]
    B: torch.Tensor  # prepack_weight(W)
    scale_a: torch.Tensor
    scale_b: torch.Tensor
    bias: Optional[torch.Tensor]
    A16: Optional[torch.Tensor] = None
    W16: Optional[torch.Tensor] = None


def rotation(M: int, N: int, K: int, l2_bytes: int) -> int:
    """How many input sets the timed calls rotate through (:func:`hipbmm_inductor.timing.rotations`),
    counting the bytes one FP8 call touches: A, W, out.

    Sized by the FP8 call alone: the bf16 copies some sets also carry are never touched by it.
    (Counting them once made 4096 x 4096 rotate over 2 sets, 34 MB of weights, inside H100's
    50 MB L2, and flattered both sides' no-bias times at M <= 64.)
    """
    return rotations(M * K + N * K + 2 * M * N, l2_bytes, cap=32)


def random_inputs(M: int, N: int, K: int, fp8, bias, device, with_bf16: bool = False,
                  generator: Optional[torch.Generator] = None) -> InputSet:
    """One set of fresh random op inputs, spread over the fp8 range (never zeros: they run faster,
    METHOD.md), with the plain weight beside its prepacked view. ``bias``: ``False``/``None`` for
    none, ``True`` for bf16, or a dtype."""
    g = {"generator": generator, "device": device}
    A = (torch.randn(M, K, **g) * 2).to(fp8)
    W = (torch.randn(N, K, **g) * 2).to(fp8)
    bias_dtype = torch.bfloat16 if bias is True else (bias or None)
    s = InputSet(
        A, W, prepack_weight(W),
        torch.rand(M, 1, **g) * 0.01 + 1e-3,
        torch.rand(1, N, **g) * 0.01 + 1e-3,
        torch.randn(N, **g).to(bias_dtype) if bias_dtype is not None else None,
    )
    if with_bf16:
        s.A16, s.W16 = A.to(torch.bfloat16), W.to(torch.bfloat16)
    return s


def make_sets(M, N, K, fp8, bias: bool, device, l2_bytes: int, with_bf16: bool = False) -> list[InputSet]:
    """As many fresh sets as :func:`rotation` asks for."""
    return [random_inputs(M, N, K, fp8, bias, device, with_bf16) for _ in range(rotation(M, N, K, l2_bytes))]
