"""``python -m hipbmm_inductor bench``: hipb_mm_fp8 against the vendor GEMM, with roofline floors.

For each weight shape ``(N, K)``, each ``M`` and each bias setting, on fresh random data:

- ``ours``: ``torch.ops.hipbmm.hipb_mm_fp8`` on the prepacked (preshuffled) weight, through the
  whole op (custom op dispatch, validation, tuning lookup, launch) with the chosen backend;
- ``baseline``: ``torch._scaled_mm`` with rowwise scales (bf16 out), i.e. cuBLASLt/CUTLASS on
  NVIDIA, hipBLASLt on ROCm, on the plain weight, in the same accumulation mode as ours:
  ``use_fast_accum=False`` against the Triton backend's default ``promoted`` mode, ``True``
  against ``--accumulation fast`` (``HIPBMM_TRITON_ACCUMULATION``), so like is timed with like;
- ``linear_bf16`` (``--bf16``): ``F.linear`` in bf16, so users see where FP8 pays;
- ``floor``: bytes moved (A, W, scales, bias read once; out written once) over the device copy
  bandwidth measured in the same run; ``compute_floor``: 2MNK over the measured FP8 peak.

Two timings, both medians:

- ``graph`` (default): a CUDA graph that calls the op once per rotating input set, replayed;
  per-call time = replay time / calls. Host overhead is excluded (how vLLM decodes). Input sets
  rotate so that their total exceeds 3x L2: no call finds its weight in cache. Ours and the
  baseline take turns, replay by replay, so both run at the same clocks.
- ``plain``: the same rotation as eager back-to-back launches between two events, so host
  overhead (Python dispatch, validation, tuning lookup, Triton's launcher) shows wherever it
  exceeds the kernel time.

Writes a JSON file (one record per (shape, M, bias), plus device, versions, bandwidth, peak) and
a PNG (TFLOP/s vs M per shape; speedup over the baseline). ``--inductor`` adds Inductor's own
``_scaled_mm`` under ``max-autotune`` for the shapes it names (slow: autotuning per shape).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch

from .cli import backend_arg
from .timing import copy_bandwidth, fp8_peak, time_graph, time_graphs, time_plain

log = logging.getLogger("hipbmm_inductor")

__all__ = ["SUITES", "Record", "random_inputs", "run_bench", "register"]

SUITES = {
    "llama3-8b": [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)],
    "llama3-70b": [(10240, 8192), (8192, 8192), (57344, 8192), (8192, 28672)],
    # A second set, other model families' linears (N, K): Qwen2.5-7B qkv, gate_up, down; Mistral-Nemo-12B
    # qkv, down; DeepSeek-V3-like shapes: a q_a/kv_a-sized projection whose N = 2064 no tile divides,
    # q_b, o, an expert's down; a 128-expert MoE router (N = 128); Qwen3-32B down (K = 25600).
    "qwen-mistral-deepseek": [(4608, 3584), (37888, 3584), (3584, 18944), (6144, 5120), (5120, 14336),
                              (2064, 7168), (24576, 1536), (7168, 16384), (7168, 2048), (128, 4096),
                              (5120, 25600)],
}
DEFAULT_MS = (1, 16, 64, 256, 1024, 4096)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass
class _Set:
    A: torch.Tensor
    W: torch.Tensor  # plain [N, K]
    B: torch.Tensor  # prepack_weight(W)
    scale_a: torch.Tensor
    scale_b: torch.Tensor
    bias: Optional[torch.Tensor]
    A16: Optional[torch.Tensor] = None
    W16: Optional[torch.Tensor] = None


def rotation(M: int, N: int, K: int, l2_bytes: int) -> int:
    """How many input sets the timed calls rotate through: enough that the bytes one FP8 call
    touches (A, W, out), over all sets, reach 3x L2, so no call finds its weight in cache.

    Sized by the FP8 call alone: the bf16 copies some sets also carry are never touched by it.
    (Counting them once made 4096 x 4096 rotate over 2 sets, 34 MB of weights, inside H100's
    50 MB L2, and flattered both sides' no-bias times at M <= 64.)
    """
    per_call = M * K + N * K + 2 * M * N
    return max(2, min(32, math.ceil(3 * l2_bytes / per_call)))


def random_inputs(M: int, N: int, K: int, fp8, bias: bool, device, with_bf16: bool = False) -> _Set:
    """One set of fresh random op inputs, spread over the fp8 range (never zeros: they run faster,
    METHOD.md), with the plain weight beside its prepacked view."""
    from hipbmm_inductor import prepack_weight

    A = (torch.randn(M, K, device=device) * 2).to(fp8)
    W = (torch.randn(N, K, device=device) * 2).to(fp8)
    s = _Set(
        A, W, prepack_weight(W),
        torch.rand(M, 1, device=device) * 0.01 + 1e-3,
        torch.rand(1, N, device=device) * 0.01 + 1e-3,
        torch.randn(N, device=device).to(torch.bfloat16) if bias else None,
    )
    if with_bf16:
        s.A16, s.W16 = A.to(torch.bfloat16), W.to(torch.bfloat16)
    return s


def _make_sets(M, N, K, fp8, bias: bool, device, l2_bytes: int, with_bf16: bool) -> list[_Set]:
    return [random_inputs(M, N, K, fp8, bias, device, with_bf16) for _ in range(rotation(M, N, K, l2_bytes))]


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


@dataclass
class Record:
    N: int
    K: int
    M: int
    bias: bool
    ours_us: float
    baseline_us: float
    floor_us: float
    compute_floor_us: float
    speedup: float
    floor_fraction: float  # floor_us / ours_us: 1.0 = at the memory roofline
    ours_tflops: float
    baseline_tflops: float
    ours_plain_us: Optional[float] = None
    baseline_plain_us: Optional[float] = None
    linear_bf16_us: Optional[float] = None
    inductor_us: Optional[float] = None
    max_rel_err: Optional[float] = None
    config: Optional[dict] = None
    # The baseline's accumulation when it differs from the run's (cuBLASLt has no fast-accumulation
    # algorithm for some rowwise shapes with bias, e.g. M=1 4096x14336: it then runs promoted).
    baseline_fast_accum: Optional[bool] = None


def _bytes_moved(M, N, K, bias: bool) -> int:
    return M * K + N * K + 2 * M * N + 4 * M + 4 * N + (2 * N if bias else 0)


def _inductor_scaled_mm(sets: list[_Set]):
    """Inductor's own lowering of rowwise ``_scaled_mm`` under max-autotune (no rewrite)."""
    import hipbmm_inductor as hi

    def f(A, Wt, sa, sb, bias):
        return torch._scaled_mm(A, Wt, sa, sb, bias=bias, out_dtype=torch.bfloat16)

    was = hi.is_enabled()
    hi.disable()  # our pass must not rewrite it: this row measures Inductor itself
    try:
        torch._dynamo.reset()
        cf = torch.compile(f, mode="max-autotune-no-cudagraphs", dynamic=False)
        cf(sets[0].A, sets[0].W.t(), sets[0].scale_a, sets[0].scale_b, sets[0].bias)
    finally:
        if was:
            hi.enable()
    return lambda i: cf(sets[i].A, sets[i].W.t(), sets[i].scale_a, sets[i].scale_b, sets[i].bias)


def run_bench(
    shapes: Sequence[tuple[int, int]],
    ms: Sequence[int],
    biases: Sequence[bool] = (False, True),
    backend: str = "triton",
    fp8: torch.dtype = torch.float8_e4m3fn,
    plain: bool = True,
    bf16: bool = True,
    inductor_shapes: Sequence[tuple[int, int, int]] = (),
    device: str = "cuda",
    progress: Callable[[Record], None] = lambda r: None,
) -> dict:
    import triton

    import hipbmm_inductor as hi
    from hipbmm_inductor import envs
    from hipbmm_inductor.ops import registry

    hi.set_backend(backend)
    fast = backend == "triton" and envs.HIPBMM_TRITON_ACCUMULATION == "fast"
    dev = torch.device(device)
    be = registry.backend_for(dev)
    props = torch.cuda.get_device_properties(dev)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    bw = copy_bandwidth(dev)
    peak = fp8_peak(dev, fp8)
    log.info("copy bandwidth %.2f TB/s, fp8 peak %.0f TFLOP/s", bw / 1e12, peak / 1e12)
    records = []
    for N, K in shapes:
        for M in ms:
            for bias in biases:
                with_bf16 = bf16 and not bias
                sets = _make_sets(M, N, K, fp8, bias, dev, l2, with_bf16)
                n = len(sets)
                ours = lambda i: hi.hipb_mm_fp8(sets[i].A, sets[i].B, sets[i].scale_a, sets[i].scale_b, sets[i].bias)  # noqa: E731
                base_fast = fast

                def base(i):
                    return torch._scaled_mm(
                        sets[i].A, sets[i].W.t(), sets[i].scale_a, sets[i].scale_b,
                        bias=sets[i].bias, out_dtype=torch.bfloat16, use_fast_accum=base_fast,
                    )

                try:
                    r = base(0).float()
                except RuntimeError as e:  # CUBLAS_STATUS_NOT_SUPPORTED for this fast-accum shape
                    if not fast:
                        raise
                    log.warning("baseline: no fast-accumulation algorithm for M=%d N=%d K=%d bias=%s (%s); "
                                "timing the promoted one", M, N, K, bias, str(e)[:120])
                    base_fast = False
                    r = base(0).float()
                # Numerics on the first set (the benchmark must time the right function).
                o = ours(0).float()
                rel = ((o - r).norm() / r.norm()).item()
                ours_us, baseline_us = time_graphs([ours, base], n)
                floor_us, flops = _bytes_moved(M, N, K, bias) / bw * 1e6, 2 * M * N * K
                rec = Record(
                    N=N, K=K, M=M, bias=bias,
                    ours_us=ours_us, baseline_us=baseline_us,
                    floor_us=floor_us, compute_floor_us=flops / peak * 1e6,
                    speedup=baseline_us / ours_us, floor_fraction=floor_us / ours_us,
                    ours_tflops=flops / ours_us / 1e6, baseline_tflops=flops / baseline_us / 1e6,
                    max_rel_err=rel,
                    baseline_fast_accum=None if base_fast == fast else base_fast,
                )
                if plain:
                    rec.ours_plain_us = time_plain(ours, n)
                    rec.baseline_plain_us = time_plain(base, n)
                if with_bf16:
                    rec.linear_bf16_us = time_graph(
                        lambda i: torch.nn.functional.linear(sets[i].A16, sets[i].W16), n
                    )
                if (N, K, M) in set(map(tuple, inductor_shapes)):
                    rec.inductor_us = time_graph(_inductor_scaled_mm(sets), n)
                if be.name == "triton":
                    # What the timed calls launched with: a tuned config where the cache has one.
                    s0 = sets[0]
                    rec.config = dict(be.config_for(s0.A, s0.B, s0.scale_a, s0.scale_b, s0.bias, torch.bfloat16)[0])
                records.append(rec)
                progress(rec)
                sets.clear()  # frees this point's inputs (the timed closures die with the loop)
                torch.cuda.empty_cache()
    speedups = [r.speedup for r in records]
    return {
        "device": props.name,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "backend": be.name,
        "accumulation": "fast" if fast else "promoted",
        "baseline": f"torch._scaled_mm rowwise, use_fast_accum={fast}",
        "fp8": str(fp8),
        "copy_bandwidth_TBps": bw / 1e12,
        "fp8_peak_TFLOPs": peak / 1e12,
        "timing": "median; 'ours_us'/'baseline_us' from CUDA-graph replays rotating inputs > 3x L2, "
                  "ours and the baseline taking turns; "
                  "'*_plain_us' from eager back-to-back launches (host overhead included)",
        "geomean_speedup": math.exp(sum(map(math.log, speedups)) / len(speedups)) if speedups else None,
        "min_speedup": min(speedups) if speedups else None,
        "records": [asdict(r) for r in records],
    }


# --------------------------------------------------------------------------------------------
# Output: table and plot
# --------------------------------------------------------------------------------------------


def format_row(r: dict | Record) -> str:
    r = asdict(r) if isinstance(r, Record) else r
    plain = ""
    if r.get("ours_plain_us") is not None:
        plain = f" | plain {r['ours_plain_us']:7.1f} / {r['baseline_plain_us']:7.1f}"
    return (
        f"N={r['N']:6d} K={r['K']:6d} M={r['M']:5d} bias={int(r['bias'])} | ours {r['ours_us']:8.1f} us"
        f" | base {r['baseline_us']:8.1f} us | x{r['speedup']:5.2f} | floor {r['floor_us']:7.1f} us"
        f" ({100 * r['floor_fraction']:5.1f}%) | {r['ours_tflops']:6.0f} TF/s{plain}"
        + (" | baseline promoted (no fast-accum algorithm)" if r.get("baseline_fast_accum") is False else "")
    )


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in result["records"] if not r["bias"]] or result["records"]
    shapes = list(dict.fromkeys((r["N"], r["K"]) for r in recs))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6))
    for i, (N, K) in enumerate(shapes):
        rs = sorted((r for r in recs if (r["N"], r["K"]) == (N, K)), key=lambda r: r["M"])
        m = [r["M"] for r in rs]
        color = f"C{i % 10}"
        ax1.plot(m, [r["ours_tflops"] for r in rs], "-o", color=color, label=f"{N}x{K} ours")
        ax1.plot(m, [r["baseline_tflops"] for r in rs], "--x", color=color, alpha=0.6)
        ax2.plot(m, [r["speedup"] for r in rs], "-o", color=color, label=f"{N}x{K}")
    ax1.set(xscale="log", yscale="log", xlabel="M (tokens)", ylabel="TFLOP/s",
            title=f"{result['device']}: hipb_mm_fp8 ({result['backend']}, {result.get('accumulation', 'promoted')} "
                  f"accumulation, solid)\nvs _scaled_mm (dashed)")
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.axhline(1.2, color="g", lw=0.8, ls=":")
    ax2.axhline(0.9, color="r", lw=0.8, ls=":")
    ax2.set(xscale="log", xlabel="M (tokens)", ylabel="speedup vs torch._scaled_mm (rowwise)",
            title=f"speedup, no bias (geomean of every point run: x{result['geomean_speedup']:.2f}); CUDA graphs")
    ax1.legend(fontsize=7, ncol=2)
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for part in text.replace(" ", "").split(";"):
        if not part:
            continue
        if part in SUITES:
            shapes += SUITES[part]
            continue
        try:
            n, k = (int(x) for x in part.lower().replace("x", ",").split(","))
        except ValueError:
            raise ValueError(f"--shapes: expected 'N,K;N,K' or a suite ({', '.join(SUITES)}), got {part!r}")
        shapes.append((n, k))
    return shapes


def _parse_ints(text: str, arg: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{arg}: expected comma-separated integers, got {text!r}")
    if not vals or min(vals) < 1:
        raise ValueError(f"{arg}: expected positive integers, got {text!r}")
    return vals


def _main_block(args: argparse.Namespace) -> int:
    from . import bench_block as bb

    tokens = _parse_ints(args.tokens, "--tokens")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = args.out if args.out != "bench.json" else "block.json"
    plot_path = _plot_path(out, args.plot)
    done: list = []

    def progress(r) -> None:
        print(bb.format_record(r), flush=True)
        done.append(r)
        if out:  # partial results survive an interrupted run
            bb.write(done, out, device, args.backend)

    bb.run_block_bench(args.model, tokens, modes, backend=args.backend, iters=args.iters, repeats=args.repeats,
                       progress=progress)
    if out:
        print(f"wrote {out}")
    if plot_path and done:
        bb.plot(done, plot_path, device, args.backend)
        print(f"wrote {plot_path}")
    return 0


def _main(args: argparse.Namespace) -> int:
    if args.model:
        return _main_block(args)
    if not torch.cuda.is_available():
        raise RuntimeError("bench: needs a GPU (torch.cuda.is_available() is False)")
    shapes = _parse_shapes(args.shapes)
    ms = _parse_ints(args.m, "--m")
    biases = {"both": (False, True), "yes": (True,), "no": (False,)}[args.bias]
    inductor = [tuple(_parse_ints(s, "--inductor")) for s in args.inductor.split(";") if s.strip()]
    for s in inductor:
        if len(s) != 3:
            raise ValueError(f"--inductor: expected 'N,K,M;...', got {s}")
    fp8 = getattr(torch, args.fp8)
    plot_path = _plot_path(args.out, args.plot)
    if args.accumulation:
        from hipbmm_inductor import envs

        envs.set_override("HIPBMM_TRITON_ACCUMULATION", args.accumulation)
    done = []

    def progress(r: Record) -> None:
        print(format_row(r), flush=True)
        done.append(asdict(r))
        if args.out:  # partial results survive an interrupted run
            with open(args.out + ".partial", "w") as f:
                json.dump({"records": done}, f)

    result = run_bench(
        shapes, ms, biases, backend=args.backend, fp8=fp8, plain=not args.no_plain,
        bf16=not args.no_bf16, inductor_shapes=inductor, progress=progress,
    )
    print(f"geomean speedup x{result['geomean_speedup']:.3f}, min x{result['min_speedup']:.3f}; "
          f"copy {result['copy_bandwidth_TBps']:.2f} TB/s, fp8 peak {result['fp8_peak_TFLOPs']:.0f} TFLOP/s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        if os.path.exists(args.out + ".partial"):
            os.remove(args.out + ".partial")
        print(f"wrote {args.out}")
    if plot_path:
        plot(result, plot_path)
        print(f"wrote {plot_path}")
    return 0


def _plot_path(out: str, plot: Optional[str]) -> str:
    """``--plot`` as given, or else beside ``--out`` (``x.json`` -> ``x.png``); '' for none. Refuses
    a plot that would overwrite the JSON (``--out r.png``)."""
    path = plot if plot is not None else (os.path.splitext(out)[0] + ".png" if out else "")
    if path and out and os.path.abspath(path) == os.path.abspath(out):
        raise ValueError(f"--plot and --out name the same file ({out}): the plot would overwrite the JSON; "
                         f"name another --plot")
    return path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time hipb_mm_fp8 against torch._scaled_mm (rowwise) with roofline floors")
    p.add_argument("--shapes", default="llama3-8b;llama3-70b",
                   help="'N,K;N,K' weight shapes and/or suite names (default: llama3-8b;llama3-70b)")
    p.add_argument("--m", default=",".join(map(str, DEFAULT_MS)), help="comma-separated M (tokens)")
    p.add_argument("--bias", choices=("both", "yes", "no"), default="both")
    p.add_argument("--backend", type=backend_arg, default="triton", help="hipb_mm_fp8 backend to time (default: triton)")
    p.add_argument("--fp8", default="float8_e4m3fn", choices=("float8_e4m3fn", "float8_e4m3fnuz"))
    p.add_argument("--accumulation", choices=("promoted", "fast"), default=None,
                   help="Triton backend's accumulation (default: HIPBMM_TRITON_ACCUMULATION, else promoted); "
                        "the baseline runs in the same mode")
    p.add_argument("--no-plain", action="store_true", help="skip eager (host-overhead-included) timings")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 F.linear comparison")
    p.add_argument("--inductor", default="", help="'N,K,M;...': also time Inductor max-autotune _scaled_mm")
    p.add_argument("--out", default="bench.json", help="JSON output path ('' for none; block.json with --model)")
    p.add_argument("--plot", default=None, help="PNG output path (default: --out's path with .png; '' for none)")
    b = p.add_argument_group("decoder block (--model): a compiled FP8 layer with and without the rewrite")
    b.add_argument("--model", default=None, choices=("llama3-8b", "llama3-70b", "tiny"),
                   help="time a compiled FP8 decoder block of this model instead of single GEMMs")
    b.add_argument("--tokens", default="1,16,128,512,2048", help="comma-separated token counts (with --model)")
    b.add_argument("--modes", default="default,reduce-overhead,max-autotune",
                   help="comma-separated torch.compile modes (with --model)")
    b.add_argument("--iters", type=int, default=20, help="calls per timed loop (with --model)")
    b.add_argument("--repeats", type=int, default=10, help="timed loops; the median is reported (with --model)")
    p.set_defaults(func=_main)
