"""The reference backend: the test oracle, the CPU backend and the benchmarks' sanity check.

Computes, for ``B`` the ``[K, N]`` view of a preshuffled weight ``W``:

    out[m, n] = cast(sum_k A[m, k] * W[n, k]  (fp32)  * scale_a[m] * scale_b[n] + bias[n])

It recovers ``W`` with the layout's closed-form index formula (a gather), deliberately *not* with
:mod:`.layout`'s permutation, so that it checks the layout code instead of sharing its bugs.
Then it dequantises to fp32, multiplies in fp32 and applies the epilogue in fp32 before one
final cast: the order hipBLASLt's epilogue uses. Runs on any device.
"""

from __future__ import annotations

import torch

from .registry import Availability, register_backend

__all__ = ["ReferenceBackend", "reference_hipb_mm_fp8", "unshuffle_by_formula", "shuffled_index"]


def shuffled_index(n: int, k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``idx[n, k]``: where ``W[n, k]`` is stored in the shuffled ``[N, K]`` fp8 buffer."""
    nn = torch.arange(n, dtype=torch.int64, device=device).view(n, 1)
    kk = torch.arange(k, dtype=torch.int64, device=device).view(1, k)
    # docs/contract.md, "The weight layout", verbatim. Built per call, not cached: an oracle should stay simple, and a
    # cached [N, K] int64 index would hold 8 bytes per weight byte.
    return ((((nn // 16) * (k // 32) + kk // 32) * 2 + (kk % 32) // 16) * 16 + nn % 16) * 16 + kk % 16


def unshuffle_by_formula(stored: torch.Tensor) -> torch.Tensor:
    """Plain ``[N, K]`` weight from its shuffled ``[N, K]`` fp8 storage, by the index formula."""
    n, k = stored.shape
    flat = stored.contiguous().view(torch.uint8).reshape(-1)
    idx = shuffled_index(n, k, stored.device)
    return flat[idx.reshape(-1)].view(n, k).view(stored.dtype)


def reference_hipb_mm_fp8(A, B, scale_a, scale_b, bias=None, out_dtype=torch.bfloat16) -> torch.Tensor:
    """The op's math on already-validated inputs, in fp32 end to end."""
    # B is [K, N] with strides (1, K): B.t() is the shuffled [N, K] storage, contiguous.
    w = unshuffle_by_formula(B.t())
    acc = A.to(torch.float32) @ w.to(torch.float32).t()
    out = acc * scale_a * scale_b
    if bias is not None:
        out = out + bias.to(torch.float32)
    return out.to(out_dtype).contiguous()


class ReferenceBackend:
    name = "reference"

    def availability(self, device: torch.device) -> Availability:
        return Availability(True, "pure PyTorch: runs on every device")

    def is_fast(self, device: torch.device) -> bool:
        # An fp32 dequantise-and-matmul is never faster than the vendor GEMM it replaces.
        return False

    def run(self, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        return reference_hipb_mm_fp8(A, B, scale_a, scale_b, bias, out_dtype)


register_backend(ReferenceBackend())
