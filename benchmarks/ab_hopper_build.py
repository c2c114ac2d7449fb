"""Two builds of the sm_90 kernel, A/B, in one run: is a change to the kernel faster, and is its
output the same? The evidence behind changes that keep the kernel's sums but move its copies.

For each (N, K) of the suite and the second set and each M, on rotating inputs (``bench.inputs``:
no call finds its weight in L2), in CUDA graphs, all columns timed in turns under one clock
(``timing.time_graphs``): ``torch._scaled_mm`` rowwise (cuBLASLt), then each config as ``old``
(the build named by ``--old-module``, a file path or an import path) and as ``new`` (this
checkout's ``ops/triton_fp8_hopper.py``). The configs are the H200 heuristic's, plus, with
``--alternatives`` at M <= 64, 64-row tiles of 32, 64 and 128 columns at 4, 6 and 8 stages. Every
config's two outputs are compared bit for bit (``same``).

``--before elementwise`` puts a one-block elementwise kernel before every call of every column
(and times that kernel alone, ``before_us``), as a model has between two GEMMs: a change to how
the kernel is launched (programmatic dependent launch, say) can look faster between back-to-back
calls of one GEMM and slower in that sequence (``benchmarks/results/h200/ab_pdl_prefetch.json``).

    python benchmarks/ab_hopper_build.py --old-module old/triton_fp8_hopper.py --m 1,16,64 \\
        --alternatives --out ab_decode.json
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import sys

import torch

from hipbmm_inductor.bench.gemm import bytes_moved, environment
from hipbmm_inductor.bench.inputs import make_sets
from hipbmm_inductor.bench.suites import SUITES, parse_ints, parse_shapes
from hipbmm_inductor.ops import triton_configs as C
from hipbmm_inductor.ops import triton_fp8_hopper as H
from hipbmm_inductor.timing import cache_bytes, copy_bandwidth, time_graphs

DEFAULT_SHAPES = ";".join(f"{n},{k}" for suite in ("llama3-8b", "llama3-70b", "qwen-mistral-deepseek")
                          for n, k in SUITES[suite])


def load_build(spec: str):
    """A module from a file path (``.py``: a copy of ``ops/triton_fp8_hopper.py``, loaded inside
    ``hipbmm_inductor.ops`` so that its relative imports resolve) or an import path."""
    if spec.endswith(".py"):
        if not os.path.isfile(spec):
            raise ValueError(f"--old-module: no such file {spec!r}")
        name = "hipbmm_inductor.ops._ab_old_build"
        loader = importlib.util.spec_from_file_location(name, spec)
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module  # its dataclasses look their module up there
        try:
            loader.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise ValueError(f"--old-module: {spec!r} does not load ({type(e).__name__}: {e})") from None
        return module
    try:
        return importlib.import_module(spec)
    except ImportError as e:
        raise ValueError(f"--old-module: cannot import {spec!r} ({e})") from None


def tiles(M: int, N: int, K: int, alternatives: bool) -> list[tuple]:
    h = C.heuristic_config(M, N, K, hopper=True, chip="h200")
    out = [(h["BLOCK_M"], h["BLOCK_N"], h["BLOCK_K"], h["num_stages"])] if h.get("HOPPER") else []
    if alternatives and M <= 64:
        bk = 256 if K % 256 == 0 else 128
        out += [(64, bn, bk, st) for bn in (32, 64, 128) for st in (4, 6, 8) if bn <= N]
    valid = []
    for t in dict.fromkeys(out):
        try:
            H.check_config(C.make_hopper_config(*t), K)
        except ValueError:
            continue
        valid.append(t)
    return valid


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--old-module", required=True, help="the other build: a .py file or an import path")
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="'N,K;...'")
    p.add_argument("--m", default="1,16,64")
    p.add_argument("--alternatives", action="store_true", help="at M <= 64, also 64-row tiles of 32-128 columns")
    p.add_argument("--before", choices=("none", "elementwise"), default="none",
                   help="what runs before every call: nothing (back-to-back GEMMs) or a small elementwise kernel")
    p.add_argument("--note", default="", help="what the two builds are, stored in the results file")
    p.add_argument("--out", default="ab_hopper_build.json")
    args = p.parse_args()
    try:
        shapes, ms = parse_shapes(args.shapes), parse_ints(args.m, "--m")
        old = load_build(args.old_module)
    except ValueError as e:
        p.error(str(e))
    dev = torch.device("cuda")
    l2, bw = cache_bytes(dev), copy_bandwidth(dev)
    result = {**environment(dev), "note": args.note, "before": args.before, "copy_bandwidth_TBps": bw / 1e12,
              "points": []}
    scratch = torch.zeros(4096, device=dev)  # what --before elementwise touches: one block's work

    def before(call):
        if args.before == "none":
            return call

        def both(i):
            scratch.add_(1.0)
            return call(i)
        return both

    for N, K in shapes:
        for M in ms:
            sets = make_sets(M, N, K, torch.float8_e4m3fn, False, dev, l2)
            calls = [before(lambda i: torch._scaled_mm(sets[i].A, sets[i].W.t(), sets[i].scale_a, sets[i].scale_b,
                                                       out_dtype=torch.bfloat16))]
            names = []
            for t in tiles(M, N, K, args.alternatives):
                cfg = C.make_hopper_config(*t)
                first = None
                for build, mod in (("old", old), ("new", H)):
                    prepared = mod.prepare(cfg, M, N, K, False, dev)
                    outs = [torch.empty(M, N, dtype=torch.bfloat16, device=dev) for _ in sets]

                    def call(i, mod=mod, prepared=prepared, outs=outs):
                        s = sets[i]
                        mod.run_prepared(prepared, s.A, s.B, s.scale_a, s.scale_b, None, outs[i])
                        return outs[i]

                    got = call(0).clone()
                    first = got if first is None else first
                    calls.append(before(call))
                    names.append((list(t), build, bool(torch.equal(got, first))))
            if args.before != "none":
                calls.append(lambda i: scratch.add_(1.0))
            times = time_graphs(calls, len(sets), target_ms=1.0, repeats=9)
            row = {"N": N, "K": K, "M": M, "baseline_us": times[0], "floor_us": bytes_moved(M, N, K, False) / bw * 1e6,
                   "configs": [{"tile": t, "build": b, "same": same, "us": us}
                               for (t, b, same), us in zip(names, times[1:])]}
            if args.before != "none":
                row["before_us"] = times[-1]
            result["points"].append(row)
            pairs = {}
            for c in row["configs"]:
                pairs.setdefault(tuple(c["tile"]), {})[c["build"]] = c["us"]
            ratio = math.exp(sum(math.log(v["new"] / v["old"]) for v in pairs.values()) / max(1, len(pairs)))
            print(f"{N}x{K} M={M}: cuBLASLt {times[0]:.1f} us; new/old {ratio:.3f} over {len(pairs)} configs; "
                  f"{'same' if all(c['same'] for c in row['configs']) else 'OUTPUTS DIFFER'}", flush=True)
            sets.clear()
            # Written after every point: a run cut short by a time limit keeps what it measured.
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
