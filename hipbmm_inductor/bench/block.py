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
it; under ``reduce-overhead`` that loop replays CUDA graphs). On a GPU each loop is also timed
with the launch queue kept full (``*_device_us``: a spin kernel holds the GPU while the host
enqueues the loop), which is the block's device time alone: where a compiled call's host time
(Dynamo's guards, the CUDA-graph tree's bookkeeping) exceeds its GPU time, the first figure is
the host's and equal for both variants, the second still tells them apart. Records ``{mode,
tokens, with_rewrite_us, without_rewrite_us, ...}`` go to ``--out`` as they are measured.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

import hipbmm_inductor
from hipbmm_inductor import envs, lowering
from hipbmm_inductor.models import BLOCKS, FP8DecoderBlock
from hipbmm_inductor.ops import registry
from hipbmm_inductor.timing import host_us

from .gemm import environment

__all__ = ["MODES", "DEFAULT_TOKENS", "BlockRecord", "run_block_bench", "write", "format_record"]

MODES = ("default", "reduce-overhead", "max-autotune")
DEFAULT_TOKENS = (1, 16, 128, 512, 2048)


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
    # Graphs Inductor compiled without CUDA graphs although the mode asks for them (its
    # "cudagraph_skips" counter), per variant: a skipped graph runs launch by launch.
    cudagraph_skips: Optional[dict] = None
    # Every timed loop's us per call, per variant ({"with": [...], "without": [...]}), in the
    # order timed: the spread behind each median.
    samples_us: Optional[dict] = None
    # Device time per call with the launch queue kept full (the host enqueues ahead of the GPU),
    # per variant: the block's GPU cost without the wait for the host. On CPUs, None.
    with_rewrite_device_us: Optional[float] = None
    without_rewrite_device_us: Optional[float] = None
    device_speedup: Optional[float] = None


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


def _spin_cycles_per_us() -> float:
    """GPU clock cycles per microsecond of ``torch.cuda._sleep`` (the SM clock, as it runs now)."""
    torch.cuda._sleep(1_000_000)  # ramps the clock up first
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(4_000_000)
    end.record()
    end.synchronize()
    return 4_000_000 / (start.elapsed_time(end) * 1e3)


def _queued_us(fn: Callable[[], torch.Tensor], iters: int, host_us_per_call: float, cycles_per_us: float) -> float:
    """Device time per call with the launch queue kept full: a spin kernel holds the GPU while the
    host enqueues all ``iters`` calls, so the events around them time the calls back to back, with
    no wait for the host in between (what a serving loop that runs ahead of the GPU sees). The spin
    is sized at twice the enqueue time the wall loop measured; the start event, which completes
    when the spin ends, must still be pending once the whole loop is enqueued, else the sample is
    taken again with a longer spin."""
    spin_us = 2 * iters * host_us_per_call + 100
    for _ in range(4):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(int(spin_us * cycles_per_us))
        t0 = time.perf_counter()
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        held = not start.query()  # the spin still runs: every call was queued before any started
        enqueue_us = (time.perf_counter() - t0) * 1e6
        end.synchronize()
        if held:
            return start.elapsed_time(end) * 1e3 / iters
        spin_us = 2 * max(enqueue_us, spin_us) + 100
    raise RuntimeError(f"the host could not enqueue {iters} calls ahead of the GPU (last try {enqueue_us:.0f} us)")


def _compile(block: nn.Module, mode: str, rewrite: bool, x: torch.Tensor) -> tuple[Callable, int, torch.Tensor, int]:
    """Compile ``block`` with the pass on or off and run it until warm; returns the compiled
    callable, how many matches the pass rewrote, its output, and how many of its graphs
    Inductor left without CUDA graphs."""
    from torch._dynamo.utils import counters

    lowering.reset_counters()
    (lowering.enable if rewrite else lowering.disable)()
    skips = counters["inductor"]["cudagraph_skips"]
    f = torch.compile(block, mode=None if mode == "default" else mode, dynamic=False)
    for _ in range(3):  # compile, then warm (CUDA-graph recording under reduce-overhead)
        out = f(x)
    return f, lowering.counters().rewritten, out.clone(), counters["inductor"]["cudagraph_skips"] - skips


def run_block_bench(model: str = "llama3-8b", tokens=DEFAULT_TOKENS, modes=MODES, backend: str = "triton",
                    device: Optional[str] = None, iters: int = 20, repeats: int = 10,
                    progress: Optional[Callable[[BlockRecord], None]] = None) -> list[BlockRecord]:
    """Time the block per (mode, tokens) with and without the rewrite; see the module docstring.

    Both variants are compiled first (two blocks with the same weights, so that each keeps its
    own compiled code), warmed for ~50 calls (clocks settle: an idle H200 sits at 345 MHz), and
    then timed in turns, loop by loop, so that both see the same clocks.
    """
    if model not in BLOCKS:
        raise ValueError(f"--model: expected one of {', '.join(BLOCKS)}, got {model!r}")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"--modes: expected a subset of {', '.join(MODES)}, got {', '.join(bad)}")
    if any(t < 1 for t in tokens):
        raise ValueError(f"--tokens: every token count must be >= 1, got {list(tokens)}")
    if iters < 1 or repeats < 1:
        raise ValueError(f"--iters and --repeats must be >= 1, got {iters} and {repeats}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if backend != "auto":
        available = registry.availability(backend, dev)
        if not available:  # the rewrite would skip every linear: nothing to compare
            raise ValueError(f"--backend {backend} cannot run on {dev}: {available.reason}")
    blocks = {True: FP8DecoderBlock(BLOCKS[model], dev), False: FP8DecoderBlock(BLOCKS[model], dev)}  # same seed
    records = []
    before: dict = {}  # the backend's through-Triton counts at the previous record
    freezing = torch._inductor.config.freezing
    torch._inductor.config.freezing = True
    hipbmm_inductor.set_backend(backend)
    try:
        with torch.no_grad():
            for mode in modes:
                for t in tokens:
                    x = torch.randn(t, BLOCKS[model].hidden, generator=torch.Generator().manual_seed(t)).to(
                        device=dev, dtype=torch.bfloat16)
                    torch._dynamo.reset()
                    compiled = {rw: _compile(blocks[rw], mode, rw, x) for rw in (True, False)}
                    for rw in (True, False):
                        _time_us(lambda: compiled[rw][0](x), max(1, 50 // iters), 1, dev)
                    samples: dict = {True: [], False: []}
                    queued: dict = {True: [], False: []}
                    cycles = _spin_cycles_per_us() if dev.type == "cuda" else None
                    for _ in range(repeats):
                        for rw in (True, False):
                            samples[rw].append(_time_us(lambda: compiled[rw][0](x), iters, 1, dev))
                            if cycles is not None:
                                queued[rw].append(_queued_us(lambda: compiled[rw][0](x), iters, samples[rw][-1],
                                                             cycles))
                    w_us, wo_us = statistics.median(samples[True]), statistics.median(samples[False])
                    w_dev = statistics.median(queued[True]) if cycles is not None else None
                    wo_dev = statistics.median(queued[False]) if cycles is not None else None
                    (_, n, w_out, w_skips), (_, _, wo_out, wo_skips) = compiled[True], compiled[False]
                    be = registry.backend_for(dev)  # the one `auto` chose, too
                    launches = None
                    if hasattr(be, "launch_stats"):  # this record's calls only, not the process's
                        now = be.launch_stats()
                        seen = {k: now["through_triton"].get(k, 0) - before.get(k, 0) for k in now["through_triton"]}
                        launches = {"plans": now["plans"], "through_triton": {k: v for k, v in seen.items() if v}}
                        before = dict(now["through_triton"])
                    rec = BlockRecord(model=model, mode=mode, tokens=t, with_rewrite_us=round(w_us, 2),
                                      without_rewrite_us=round(wo_us, 2), speedup=round(wo_us / w_us, 4),
                                      rewritten=n, max_abs_diff=float((w_out.float() - wo_out.float()).abs().max()),
                                      launches=launches,
                                      cudagraph_skips=None if mode == "default" else {"with": w_skips,
                                                                                      "without": wo_skips},
                                      samples_us={"with": [round(v, 2) for v in samples[True]],
                                                  "without": [round(v, 2) for v in samples[False]]},
                                      with_rewrite_device_us=None if w_dev is None else round(w_dev, 2),
                                      without_rewrite_device_us=None if wo_dev is None else round(wo_dev, 2),
                                      device_speedup=None if w_dev is None else round(wo_dev / w_dev, 4))
                    records.append(rec)
                    if progress is not None:
                        progress(rec)
    finally:
        torch._inductor.config.freezing = freezing
        hipbmm_inductor.set_backend(None)
        envs.set_override("HIPBMM_LOWERING", None)
        torch._dynamo.reset()
    return records


def write(records: list[BlockRecord], path: str, device: torch.device, backend: str) -> None:
    data = {"what": "compiled FP8 decoder block, with vs without the hipb_mm_fp8 rewrite", "backend": backend,
            **environment(device), "records": [asdict(r) for r in records]}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def format_record(r: BlockRecord) -> str:
    line = (f"{r.model:10s} {r.mode:16s} tokens={r.tokens:5d}  with {r.with_rewrite_us:9.1f} us  without "
            f"{r.without_rewrite_us:9.1f} us  x{r.speedup:.3f}")
    if r.device_speedup is not None:
        line += (f"  | queue full: {r.with_rewrite_device_us:.1f} vs {r.without_rewrite_device_us:.1f} us"
                 f" x{r.device_speedup:.3f}")
    return line + f"  rewritten={r.rewritten}  max|diff|={r.max_abs_diff:.3g}"
