"""The small FP8 models the demo, the block benchmark and the tests compile: ordinary PyTorch, written
the way FP8 checkpoints' layers are written, with nothing of this package in them.

- :func:`quantize_per_token` / :func:`quantize_weight_per_channel`: dynamic absmax quantisation
  to fp8 with fp32 scales.
- :class:`FP8Linear`: an FP8 W8A8 linear in one of :data:`FORMS` (rowwise ``torch._scaled_mm``,
  ``torch.nn.functional.scaled_mm`` with RowWise recipes, vLLM's channelwise fallback).
- :class:`FP8MLP`: a Llama MLP with one linear in each form (the demo's model).
- :class:`FP8DecoderBlock`: one Llama-style decoder layer (SDPA plus the four linears), in the
  sizes of :data:`BLOCKS` (the block benchmark's model).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import hardware
from .compat import DYNAMO_TRACES_SCALED_MM_V2
from .lowering.counters import FORMS  # an FP8Linear spells each form the lowering rewrites

__all__ = ["FORMS", "BLOCKS", "BlockShape", "FP8Linear", "FP8MLP", "FP8DecoderBlock", "quantize_per_token",
           "quantize_weight_per_channel"]


def _absmax_rows(x: torch.Tensor, fp8: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    fmax = torch.finfo(fp8).max
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / fmax
    return (x.float() / scale).clamp(-fmax, fmax).to(fp8), scale


def quantize_per_token(x: torch.Tensor, fp8: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [M, K]`` -> fp8 ``[M, K]`` and fp32 per-token scales ``[M, 1]`` (dynamic, absmax)."""
    return _absmax_rows(x, fp8)


def quantize_weight_per_channel(w: torch.Tensor, fp8: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [N, K]`` -> fp8 ``[N, K]`` and fp32 per-channel scales ``[N, 1]`` (vLLM's layout)."""
    return _absmax_rows(w, fp8)




class FP8Linear(nn.Module):
    """An FP8 W8A8 linear written the way real code writes it (``form`` picks the spelling).

    ``scale_layout`` is how the per-channel weight scale is stored and fed: ``"n1"`` as ``[N, 1]``
    passed transposed (vLLM), ``"1n"`` as ``[1, N]``, ``"flat"`` as 1-D ``[N]`` viewed to 2-D.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False, form: str = "scaled_mm",
                 use_fast_accum: bool = False, scale_layout: str = "n1", out_dtype: torch.dtype = torch.bfloat16,
                 device=None, fp8: Optional[torch.dtype] = None, seed: int = 0):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form: expected one of {FORMS}, got {form!r}")
        device = torch.device(device or "cpu")
        self.fp8 = fp8 or hardware.fp8_dtype(device)
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(out_features, in_features, generator=g) / in_features**0.5
        wq, ws = quantize_weight_per_channel(w, self.fp8)
        self.weight = nn.Parameter(wq.to(device), requires_grad=False)
        ws = {"n1": ws, "1n": ws.reshape(1, -1), "flat": ws.reshape(-1)}[scale_layout]
        self.weight_scale = nn.Parameter(ws.contiguous().to(device), requires_grad=False)
        b = torch.randn(out_features, generator=g).to(torch.bfloat16) if bias else None
        self.bias = nn.Parameter(b.to(device), requires_grad=False) if bias else None
        self.form, self.use_fast_accum, self.scale_layout, self.out_dtype = form, use_fast_accum, scale_layout, out_dtype

    def _scale_b(self) -> torch.Tensor:
        s = self.weight_scale
        return {"n1": lambda: s.t(), "1n": lambda: s, "flat": lambda: s.view(1, -1)}[self.scale_layout]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, xs = quantize_per_token(x, self.fp8)
        w_t = self.weight.t()
        if self.form == "scaled_mm":
            return torch._scaled_mm(q, w_t, scale_a=xs, scale_b=self._scale_b(), bias=self.bias,
                                    out_dtype=self.out_dtype, use_fast_accum=self.use_fast_accum)
        if self.form == "scaled_mm_v2":
            # Looked up here, not at import: the other forms run where F lacks ScalingType.
            from torch.nn.functional import ScalingType

            return F.scaled_mm(q, w_t, xs, ScalingType.RowWise, self._scale_b(), ScalingType.RowWise,
                               bias=self.bias, output_dtype=self.out_dtype, use_fast_accum=self.use_fast_accum)
        # vLLM's channelwise fallback (docs/contract.md, "vLLM"): unit scales, fp32 out, epilogue outside.
        one = torch.ones(1, dtype=torch.float32, device=x.device)
        out = torch._scaled_mm(q, w_t, scale_a=one, scale_b=one, out_dtype=torch.float32,
                               use_fast_accum=self.use_fast_accum)
        out = torch.narrow(out, 0, 0, x.shape[0])
        out = out * torch.narrow(xs, 0, 0, x.shape[0]) * self._scale_b()
        if self.bias is not None:
            out = out + self.bias
        return out.to(self.out_dtype).view(x.shape[0], -1)


class FP8MLP(nn.Module):
    """Llama MLP ``down(silu(gate(x)) * up(x))``: one linear in each form."""

    def __init__(self, hidden: int, intermediate: int, device=None):
        super().__init__()
        self.gate_proj = FP8Linear(hidden, intermediate, form="scaled_mm", device=device, seed=1)
        # F.scaled_mm is a graph break in older Dynamo (compat.py): there the layer uses _scaled_mm.
        up_form = "scaled_mm_v2" if DYNAMO_TRACES_SCALED_MM_V2 else "scaled_mm"
        self.up_proj = FP8Linear(hidden, intermediate, form=up_form, scale_layout="flat", device=device, seed=2)
        self.down_proj = FP8Linear(intermediate, hidden, form="channelwise", bias=True, device=device, seed=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


@dataclass(frozen=True)
class BlockShape:
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


BLOCKS = {
    "llama3-8b": BlockShape(hidden=4096, heads=32, kv_heads=8, intermediate=14336),
    "llama3-70b": BlockShape(hidden=8192, heads=64, kv_heads=8, intermediate=28672),
    # A small block for the CPU tests.
    "tiny": BlockShape(hidden=128, heads=4, kv_heads=2, intermediate=256),
}


class FP8DecoderBlock(nn.Module):
    """One Llama-style decoder layer with FP8 linears (no KV cache: attention over the step's tokens)."""

    def __init__(self, shape: BlockShape, device, fp8: Optional[torch.dtype] = None, seed: int = 0):
        super().__init__()
        h, hd = shape.hidden, shape.head_dim
        self.shape = shape
        # Each linear as an FP8 checkpoint's layer computes it: per-token dynamic activations x
        # per-channel weights through rowwise torch._scaled_mm, scales stored as [1, N].
        lin = functools.partial(FP8Linear, form="scaled_mm", scale_layout="1n", device=device, fp8=fp8)
        self.qkv = lin(h, (shape.heads + 2 * shape.kv_heads) * hd, seed=seed)
        self.o = lin(shape.heads * hd, h, seed=seed + 1)
        self.gate_up = lin(h, 2 * shape.intermediate, seed=seed + 2)
        self.down = lin(shape.intermediate, h, seed=seed + 3)
        self.norm1 = nn.Parameter(torch.ones(h, dtype=torch.bfloat16, device=device), requires_grad=False)
        self.norm2 = nn.Parameter(torch.ones(h, dtype=torch.bfloat16, device=device), requires_grad=False)

    @staticmethod
    def _rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [tokens, hidden] bf16
        s = self.shape
        t = x.shape[0]
        hd = s.head_dim
        qkv = self.qkv(self._rms(x, self.norm1))
        q, k, v = qkv.split([s.heads * hd, s.kv_heads * hd, s.kv_heads * hd], dim=-1)
        q = q.view(t, s.heads, hd).transpose(0, 1)
        k = k.view(t, s.kv_heads, hd).transpose(0, 1).repeat_interleave(s.heads // s.kv_heads, 0)
        v = v.view(t, s.kv_heads, hd).transpose(0, 1).repeat_interleave(s.heads // s.kv_heads, 0)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(attn.transpose(0, 1).reshape(t, s.heads * hd))
        gate, up = self.gate_up(self._rms(x, self.norm2)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)
