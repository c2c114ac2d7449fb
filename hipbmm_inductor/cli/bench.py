"""``python -m hipbmm_inductor bench``: single GEMMs against the vendor GEMM over shape suites
(:mod:`hipbmm_inductor.bench.gemm`), or with ``--model`` a compiled FP8 decoder block with and
without the rewrite (:mod:`hipbmm_inductor.bench.block`). JSON records as they are measured, then a
plot."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from dataclasses import asdict

import torch

from hipbmm_inductor import envs, hardware
from hipbmm_inductor.bench import block as bb
from hipbmm_inductor.bench.gemm import Record, format_row, run_bench
from hipbmm_inductor.bench.suites import DEFAULT_MS, parse_ints, parse_shapes
from hipbmm_inductor.models import BLOCKS

from .args import backend_arg, plot_path

__all__ = ["register"]


def _plots():
    # Imported only when a plot is asked for: matplotlib is the `bench` extra's, and the JSON is
    # written without it.
    from hipbmm_inductor.bench import plots

    return plots


def _device_name(device: torch.device) -> str:
    return hardware.device_name(device) if device.type == "cuda" else "CPU"


def _plot_target(out: str, plot) -> str:
    """Where the plot goes ('' for none), refused before any measuring when matplotlib is missing."""
    path = plot_path(out, plot)
    if path and importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot: a plot needs matplotlib (pip install -e '.[bench]'); or pass --plot ''")
    return path


def _main_block(args: argparse.Namespace) -> int:
    tokens = parse_ints(args.tokens, "--tokens")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes:
        raise ValueError(f"--modes: give at least one of {', '.join(bb.MODES)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = args.out if args.out != "bench.json" else "block.json"
    plot_to = _plot_target(out, args.plot)
    done: list = []

    def progress(r) -> None:
        print(bb.format_record(r), flush=True)
        done.append(r)
        if out:  # partial results survive an interrupted run
            bb.write(done, out, device, args.backend)

    bb.run_block_bench(args.model, tokens, modes, backend=args.backend, iters=args.iters, repeats=args.repeats,
                       progress=progress)
    if out and done:
        print(f"wrote {out}")
    if plot_to and done:
        _plots().plot_block(done, plot_to, _device_name(device), args.backend)
        print(f"wrote {plot_to}")
    return 0


def _main(args: argparse.Namespace) -> int:
    if args.accumulation:
        envs.set_override("HIPBMM_TRITON_ACCUMULATION", args.accumulation)
    if args.model:
        return _main_block(args)
    if not torch.cuda.is_available():
        raise RuntimeError("bench: needs a GPU (torch.cuda.is_available() is False)")
    shapes = parse_shapes(args.shapes)
    ms = parse_ints(args.m, "--m")
    biases = {"both": (False, True), "yes": (True,), "no": (False,)}[args.bias]
    inductor = [tuple(parse_ints(s, "--inductor")) for s in args.inductor.split(";") if s.strip()]
    for s in inductor:
        if len(s) != 3:
            raise ValueError(f"--inductor: expected 'N,K,M;...', got {s}")
    fp8 = getattr(torch, args.fp8)
    plot_to = _plot_target(args.out, args.plot)
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
    if plot_to:
        _plots().plot_gemm(result, plot_to)
        print(f"wrote {plot_to}")
    return 0



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
    b.add_argument("--model", default=None, choices=tuple(BLOCKS),
                   help="time a compiled FP8 decoder block of this model instead of single GEMMs")
    b.add_argument("--tokens", default="1,16,128,512,2048", help="comma-separated token counts (with --model)")
    b.add_argument("--modes", default="default,reduce-overhead,max-autotune",
                   help="comma-separated torch.compile modes (with --model)")
    b.add_argument("--iters", type=int, default=20, help="calls per timed loop (with --model)")
    b.add_argument("--repeats", type=int, default=10, help="timed loops; the median is reported (with --model)")
    p.set_defaults(func=_main)
