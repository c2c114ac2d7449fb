"""Where a compiled model's time goes, kernel by kernel, with and without the rewrite.

The per-GEMM suite predicts a larger gain for the demo's Llama-3-8B MLP (``demo --tokens 16
--hidden 4096 --intermediate 14336``) than its CUDA-graph time shows. This compiles the model
both ways (freezing on, as the demo does), captures each in one CUDA graph, and profiles
replays with ``torch.profiler``: each kernel's median GPU time per forward, and the forward's
span (first kernel start to last kernel end), so launch gaps show as span minus kernel sum.

With ``--model`` naming a decoder block (``llama3-8b``, ...), the block that ``bench --model``
times is profiled instead of the MLP, compiled with ``dynamic=False`` as ``bench`` compiles it.

    HIPBMM_BACKEND=triton python benchmarks/profile_demo.py --out profile_demo.json
    python benchmarks/profile_demo.py --model llama3-8b --tokens 1 --out profile_block.json
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics

import torch
import torch._inductor.config as inductor_config

import hipbmm_inductor
from hipbmm_inductor import lowering
from hipbmm_inductor.cli.args import positive_int
from hipbmm_inductor.models import BLOCKS, FP8DecoderBlock, FP8MLP
from hipbmm_inductor.timing import capture_graph


def _profile(fn, x, replays: int) -> dict:
    graph = capture_graph(lambda: fn(x))
    for _ in range(10):
        graph.replay()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
            torch.cuda.synchronize()  # one forward per sync: spans do not overlap
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels.sort(key=lambda e: e.time_range.start)
    per_fwd = len(kernels) // replays
    if per_fwd * replays != len(kernels):
        raise RuntimeError(f"{len(kernels)} kernels over {replays} replays: not a whole number per forward")
    spans, durations = [], collections.defaultdict(list)
    for r in range(replays):
        fwd = kernels[r * per_fwd:(r + 1) * per_fwd]
        spans.append(fwd[-1].time_range.end - fwd[0].time_range.start)
        for i, e in enumerate(fwd):
            durations[(i, e.name)].append(e.time_range.end - e.time_range.start)
    rows = [{"order": i, "kernel": name[:120], "us": statistics.median(d)} for (i, name), d in sorted(durations.items())]
    return {"span_us": statistics.median(spans), "kernel_sum_us": sum(r["us"] for r in rows), "kernels": rows}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="mlp", choices=["mlp", *BLOCKS],
                   help="the demo's MLP (--hidden, --intermediate) or a decoder block of bench --model")
    p.add_argument("--tokens", type=positive_int, default=16)
    p.add_argument("--hidden", type=positive_int, default=4096)
    p.add_argument("--intermediate", type=positive_int, default=14336)
    p.add_argument("--replays", type=positive_int, default=50)
    p.add_argument("--out", default="profile_demo.json")
    args = p.parse_args()
    dev = torch.device("cuda")
    hipbmm_inductor.set_backend("triton")
    torch.manual_seed(0)
    if args.model == "mlp":
        model = FP8MLP(args.hidden, args.intermediate, device=dev).eval()
        hidden, intermediate = args.hidden, args.intermediate
    else:
        model = FP8DecoderBlock(BLOCKS[args.model], dev).eval()
        hidden, intermediate = BLOCKS[args.model].hidden, BLOCKS[args.model].intermediate
    x = torch.randn(args.tokens, hidden, device=dev, dtype=torch.bfloat16)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "model": args.model,
              "tokens": args.tokens, "hidden": hidden, "intermediate": intermediate}
    with torch.no_grad(), inductor_config.patch(freezing=True):
        for label, enabled in (("with_rewrite", True), ("without_rewrite", False)):
            torch._dynamo.reset()
            lowering.reset_counters()  # cumulative otherwise: each variant reports its own count
            lowering.install()
            (lowering.enable if enabled else lowering.disable)()
            fn = torch.compile(model, dynamic=None if args.model == "mlp" else False)
            fn(x)
            result[label + "_rewritten"] = lowering.counters().rewritten
            result[label] = prof = _profile(fn, x, args.replays)
            print(f"{label}: span {prof['span_us']:.1f} us, kernels {prof['kernel_sum_us']:.1f} us")
            for r in prof["kernels"]:
                print(f"  {r['order']:2d} {r['us']:7.2f}  {r['kernel']}")
        lowering.enable()
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
