"""``python -m hipbmm_inductor bench --model llama3-8b``: a compiled FP8 decoder block, with and
without the rewrite, in each ``torch.compile`` mode.

The block is what an FP8 checkpoint's layer does in plain PyTorch: RMSNorm, a fused QKV linear,
causal attention through ``scaled_dot_product_attention`` over the step's tokens, the output
projection, RMSNorm, a fused gate/up linear, SiLU-and-multiply, the down projection, two
residual adds. Each linear quantises its input per token (dynamic absmax, e4m3) and calls
``torch._scaled_mm`` with rowwise scales against a per-channel-quantised fp8 weight (bf16 out),
the form vLLM, torchao's PerRow config and hand-written FP8 code emit.

Each (mode, tokens) is compiled twice with freezing under ``no_grad``: with the pass on (the
linears become ``hipb_mm_fp8`` on pre-shuffled constants, on ``--backend``) and off (Inductor's own
lowering: cuBLASLt ``_scaled_mm`` by default, its Triton templates too under ``max-autotune``).
Both run on the same weights and inputs; the time is the median over ``--repeats`` of a loop of
``--iters`` back-to-back calls between CUDA events (host time included, as a serving loop sees
it; under ``reduce-overhead`` that loop replays CUDA graphs). Records ``{mode, tokens,
with_rewrite_us, without_rewrite_us, ...}`` go to ``--out`` as they are measured.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .timing import host_us

__all__ = ["MODELS", "BlockShape", "FP8DecoderBlock", "BlockRecord", "run_block_bench", "MODES"]


@dataclass(frozen=True)
class BlockShape:
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


MODELS = {
    "llama3-8b": BlockShape(hidden=4096, heads=32, kv_heads=8, intermediate=14336),
    "llama3-70b": BlockShape(hidden=8192, heads=64, kv_heads=8, intermediate=28672),
    # A small block for the CPU test of this command.
    "tiny": BlockShape(hidden=128, heads=4, kv_heads=2, intermediate=256),
}
MODES = ("default", "reduce-overhead", "max-autotune")
DEFAULT_TOKENS = (1, 16, 128, 512, 2048)


def _quantize_rows(x: torch.Tensor, fp8: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    fmax = torch.finfo(fp8).max
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / fmax
    return (x.float() / scale).clamp(-fmax, fmax).to(fp8), scale


class _Linear(nn.Module):
    """Per-token dynamic activations x per-channel static weights, through ``torch._scaled_mm``."""

    def __init__(self, k: int, n: int, fp8: torch.dtype, device, g: torch.Generator):
        super().__init__()
        w = torch.randn(n, k, generator=g) / k**0.5
        wq, ws = _quantize_rows(w, fp8)
        self.weight = nn.Parameter(wq.to(device), requires_grad=False)
        self.weight_scale = nn.Parameter(ws.reshape(1, n).to(device), requires_grad=False)
        self.fp8 = fp8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xq, xs = _quantize_rows(x.reshape(-1, shape[-1]), self.fp8)
        out = torch._scaled_mm(xq, self.weight.t(), scale_a=xs, scale_b=self.weight_scale, out_dtype=torch.bfloat16)
        return out.view(*shape[:-1], -1)


class FP8DecoderBlock(nn.Module):
    """One Llama-style decoder layer with FP8 linears (no KV cache: attention over the step's tokens)."""

    def __init__(self, shape: BlockShape, device, fp8: torch.dtype = torch.float8_e4m3fn, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        h, hd = shape.hidden, shape.head_dim
        self.shape = shape
        self.qkv = _Linear(h, (shape.heads + 2 * shape.kv_heads) * hd, fp8, device, g)
        self.o = _Linear(shape.heads * hd, h, fp8, device, g)
        self.gate_up = _Linear(h, 2 * shape.intermediate, fp8, device, g)
        self.down = _Linear(shape.intermediate, h, fp8, device, g)
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


@dataclass
class BlockRecord:
    model: str
    mode: str
    tokens: int
    with_rewrite_us: float
    without_rewrite_us: float
    speedup: float
    rewritten: int
    max_abs_diff: float  # with vs without rewrite, bf16 outputs of the whole block
    launches: Optional[dict] = None  # the backend's launch_stats() after the timed calls, where it has them


def _time_us(fn: Callable[[], torch.Tensor], iters: int, repeats: int, device: torch.device) -> float:
    if device.type != "cuda":
        return host_us(fn, iters, repeats, warmup=0)
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / iters)
    return statistics.median(samples)


def _compile(block: nn.Module, mode: str, rewrite: bool, x: torch.Tensor) -> tuple[Callable, int, torch.Tensor]:
    """Compile ``block`` with the pass on or off and run it until warm; returns the compiled
    callable, how many matches the pass rewrote, and its output."""
    import hipbmm_inductor

    hipbmm_inductor.lowering.reset_counters()
    (hipbmm_inductor.enable if rewrite else hipbmm_inductor.disable)()
    f = torch.compile(block, mode=None if mode == "default" else mode, dynamic=False)
    for _ in range(3):  # compile, then warm (CUDA-graph recording under reduce-overhead)
        out = f(x)
    return f, hipbmm_inductor.lowering.counters().rewritten, out.clone()


def run_block_bench(model: str = "llama3-8b", tokens=DEFAULT_TOKENS, modes=MODES, backend: str = "triton",
                    device: Optional[str] = None, iters: int = 20, repeats: int = 10,
                    progress: Optional[Callable[[BlockRecord], None]] = None) -> list[BlockRecord]:
    """Time the block per (mode, tokens) with and without the rewrite; see the module docstring.

    Both variants are compiled first (two blocks with the same weights, so that each keeps its
    own compiled code), warmed for ~50 calls (clocks settle: an idle H200 sits at 345 MHz), and
    then timed in turns, loop by loop, so that both see the same clocks.
    """
    import hipbmm_inductor

    if model not in MODELS:
        raise ValueError(f"--model: expected one of {', '.join(MODELS)}, got {model!r}")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"--modes: expected a subset of {', '.join(MODES)}, got {', '.join(bad)}")
    if any(t < 1 for t in tokens):
        raise ValueError(f"--tokens: every token count must be >= 1, got {list(tokens)}")
    if iters < 1 or repeats < 1:
        raise ValueError(f"--iters and --repeats must be >= 1, got {iters} and {repeats}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    blocks = {True: FP8DecoderBlock(MODELS[model], dev), False: FP8DecoderBlock(MODELS[model], dev)}  # same seed
    records = []
    before: dict = {}  # the backend's through-Triton counts at the previous record
    freezing = torch._inductor.config.freezing
    torch._inductor.config.freezing = True
    hipbmm_inductor.set_backend(backend)
    try:
        with torch.no_grad():
            for mode in modes:
                for t in tokens:
                    x = torch.randn(t, MODELS[model].hidden, generator=torch.Generator().manual_seed(t)).to(
                        device=dev, dtype=torch.bfloat16)
                    torch._dynamo.reset()
                    compiled = {rw: _compile(blocks[rw], mode, rw, x) for rw in (True, False)}
                    for rw in (True, False):
                        _time_us(lambda: compiled[rw][0](x), max(1, 50 // iters), 1, dev)
                    samples: dict = {True: [], False: []}
                    for _ in range(repeats):
                        for rw in (True, False):
                            samples[rw].append(_time_us(lambda: compiled[rw][0](x), iters, 1, dev))
                    w_us, wo_us = statistics.median(samples[True]), statistics.median(samples[False])
                    (_, n, w_out), (_, _, wo_out) = compiled[True], compiled[False]
                    be = hipbmm_inductor.ops.registry.get_backend(backend)
                    launches = None
                    if hasattr(be, "launch_stats"):  # this record's calls only, not the process's
                        now = be.launch_stats()
                        seen = {k: now["through_triton"].get(k, 0) - before.get(k, 0) for k in now["through_triton"]}
                        launches = {"plans": now["plans"], "through_triton": {k: v for k, v in seen.items() if v}}
                        before = dict(now["through_triton"])
                    rec = BlockRecord(model=model, mode=mode, tokens=t, with_rewrite_us=round(w_us, 2),
                                      without_rewrite_us=round(wo_us, 2), speedup=round(wo_us / w_us, 4),
                                      rewritten=n, max_abs_diff=float((w_out.float() - wo_out.float()).abs().max()),
                                      launches=launches)
                    records.append(rec)
                    if progress is not None:
                        progress(rec)
    finally:
        torch._inductor.config.freezing = freezing
        hipbmm_inductor.set_backend(None)
        hipbmm_inductor.envs.set_override("HIPBMM_LOWERING", None)
        torch._dynamo.reset()
    return records


def environment(device: torch.device) -> dict:
    import importlib.metadata as md

    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    try:
        info["triton"] = md.version("triton")
    except md.PackageNotFoundError:
        pass
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def write(records: list[BlockRecord], path: str, device: torch.device, backend: str) -> None:
    data = {"what": "compiled FP8 decoder block, with vs without the hipb_mm_fp8 rewrite", "backend": backend,
            **environment(device), "records": [asdict(r) for r in records]}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def format_record(r: BlockRecord) -> str:
    return (f"{r.model:10s} {r.mode:16s} tokens={r.tokens:5d}  with {r.with_rewrite_us:9.1f} us  without "
            f"{r.without_rewrite_us:9.1f} us  x{r.speedup:.3f}  rewritten={r.rewritten}  max|diff|={r.max_abs_diff:.3g}")


def plot(records: list[BlockRecord], path: str, device: torch.device, backend: str) -> None:
    """Speedup of the rewrite per token count, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, mode in enumerate(dict.fromkeys(r.mode for r in records)):
        rs = sorted((r for r in records if r.mode == mode), key=lambda r: r.tokens)
        ax.plot([r.tokens for r in rs], [r.speedup for r in rs], "-o", color=f"C{i}", label=mode)
    ax.axhline(1.0, color="k", lw=0.8)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    ax.set(xscale="log", xlabel="tokens", ylabel="block time without / with the rewrite",
           title=f"{name}: compiled FP8 {records[0].model} block, hipb_mm_fp8 ({backend}) vs Inductor's own")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
