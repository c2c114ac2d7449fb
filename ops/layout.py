"""aiter's preshuffled weight layout: ``shuffle_weight(W, layout=(16, 16))``.

For a weight ``W`` of shape ``[..., N, K]`` with element size ``e`` bytes (1 or 2), let
``BN = 16``, ``BK = 32`` and ``KP = 16 // e``. The shuffle views ``W`` as
``[..., N/BN, BN, K/BK, BK/KP, KP]``, permutes it to ``[..., N/BN, K/BK, BK/KP, BN, KP]`` and
stores that contiguously under the original shape. For fp8 the element ``W[n, k]`` lands at

    ((((n // 16) * (K // 32) + k // 32) * 2 + (k % 32) // 16) * 16 + n % 16) * 16 + k % 16

so every 16 consecutive bytes hold one row's 16 k-values: 16x32 tiles stored as two row-major
16x16 sub-tiles. hipBLASLt (``bpreshuffle=True``) and our Triton kernel read this layout.

Both directions are also functional ``torch.ops.hipbmm`` ops so that a compiler pass can insert
them on a frozen weight and Inductor's constant folding evaluates them once, at compile time.
"""

from __future__ import annotations

import torch

from .errors import HipbmmInputError

__all__ = ["BN", "BK", "shuffle_weight", "unshuffle_weight", "prepack_weight", "check_shufflable"]

BN = 16  # rows (our N) per tile: hipBLASLt's layout=(16, 16) first entry
BK = 32  # bytes-independent K extent per tile: 2 * layout[1]
_SUPPORTED_ELEMENT_SIZES = (1, 2)


def check_shufflable(w: torch.Tensor, arg: str = "w") -> None:
    """Raise :class:`HipbmmInputError` unless ``w`` can hold the (16, 16) layout."""
    if not isinstance(w, torch.Tensor):
        raise HipbmmInputError(f"{arg}: expected a torch.Tensor, got {type(w).__name__}")
    if w.dim() < 2:
        raise HipbmmInputError(f"{arg}: expected at least 2 dims [..., N, K], got shape {tuple(w.shape)}")
    if w.element_size() not in _SUPPORTED_ELEMENT_SIZES:
        raise HipbmmInputError(
            f"{arg}: the (16, 16) shuffle is defined for 1- and 2-byte element types, got {w.dtype} "
            f"({w.element_size()} bytes)"
        )
    n, k = w.shape[-2], w.shape[-1]
    if n % BN != 0:
        raise HipbmmInputError(f"{arg}: N (dim -2) must be a multiple of {BN}, got N={n}")
    if k % BK != 0:
        raise HipbmmInputError(f"{arg}: K (dim -1) must be a multiple of {BK}, got K={k}")


def _tiled_shape(w: torch.Tensor) -> tuple[list[int], int]:
    *batch, n, k = w.shape
    kp = 16 // w.element_size()
    return [*batch, n // BN, BN, k // BK, BK // kp, kp], len(batch)


def _permuted_copy(tiled: torch.Tensor, perm: list[int], shape: torch.Size) -> torch.Tensor:
    # Copy into a fresh [..., N, K] tensor instead of `.contiguous().view(shape)`: the result then
    # has no 5-D `_base`, whose sizes Dynamo would otherwise guard on (and duck-size against M).
    src = tiled.permute(perm)
    out = torch.empty(shape, dtype=tiled.dtype, device=tiled.device)
    out.view(src.shape).copy_(src)
    return out


def _shuffle_impl(w: torch.Tensor) -> torch.Tensor:
    check_shufflable(w)
    tiled, nb = _tiled_shape(w)
    b = list(range(nb))
    # [.., N/16, 16, K/32, 32/KP, KP] -> [.., N/16, K/32, 32/KP, 16, KP]
    perm = [*b, nb + 0, nb + 2, nb + 3, nb + 1, nb + 4]
    return _permuted_copy(w.reshape(tiled), perm, w.shape)


def _unshuffle_impl(w: torch.Tensor) -> torch.Tensor:
    check_shufflable(w)
    tiled, nb = _tiled_shape(w)
    *batch, tn, bn, tk, kk, kp = tiled
    b = list(range(nb))
    stored = w.reshape([*batch, tn, tk, kk, bn, kp])
    # inverse of the shuffle permutation
    perm = [*b, nb + 0, nb + 3, nb + 1, nb + 2, nb + 4]
    return _permuted_copy(stored, perm, w.shape)


@torch.library.custom_op("hipbmm::shuffle_weight", mutates_args=())
def _shuffle_op(w: torch.Tensor) -> torch.Tensor:
    return _shuffle_impl(w)


@_shuffle_op.register_fake
def _(w: torch.Tensor) -> torch.Tensor:
    check_shufflable(w)
    return torch.empty_like(w, memory_format=torch.contiguous_format)


@torch.library.custom_op("hipbmm::unshuffle_weight", mutates_args=())
def _unshuffle_op(w: torch.Tensor) -> torch.Tensor:
    return _unshuffle_impl(w)


@_unshuffle_op.register_fake
def _(w: torch.Tensor) -> torch.Tensor:
    check_shufflable(w)
    return torch.empty_like(w, memory_format=torch.contiguous_format)


def shuffle_weight(w: torch.Tensor) -> torch.Tensor:
    """``[..., N, K]`` -> the same shape and dtype, stored in aiter's (16, 16) layout (contiguous)."""
    return torch.ops.hipbmm.shuffle_weight(w)


def unshuffle_weight(w: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`shuffle_weight`."""
    return torch.ops.hipbmm.unshuffle_weight(w)


def prepack_weight(w: torch.Tensor) -> torch.Tensor:
    """Checkpoint weight ``[N, K]`` -> the ``B`` argument of ``hipb_mm_fp8``.

    ``B`` is the ``[K, N]`` transposed *view* of the shuffled ``[N, K]`` storage (strides
    ``(1, K)``), exactly what vLLM and aiter hold. Never call ``.contiguous()`` on it: that
    rewrites the storage in plain row-major order and destroys the layout.
    """
    if isinstance(w, torch.Tensor) and w.dim() != 2:
        raise HipbmmInputError(f"w: expected a 2-D [N, K] weight, got shape {tuple(w.shape)}")
    return shuffle_weight(w).t()
