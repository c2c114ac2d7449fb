"""How exact is each FP8 GEMM's accumulation on this GPU? The evidence behind the Triton
backend's default (docs/triton.md, "Accumulation").

Hopper's fp8 ``wgmma`` keeps its running sum with fewer bits than fp32 inside one instruction
chain; a kernel either accepts that ("fast accumulation") or adds each chain's result into an
fp32 accumulator every N products ("promotion"). This compares, on the same fresh random data,
the error of ``torch._scaled_mm`` rowwise (the vendor baseline, with ``use_fast_accum`` False
and True) and of the Triton kernel with and without promotion, against an exact reference
(fp8 values are exact in fp64; products and sums in fp64, then the scales).

The committed ``results/h100/accumulation.json`` also has rows "promoted every 128/256/512/1024
products": they came from a measurement-only build of the portable kernel that promoted every n
``BLOCK_K`` slices by hand (not shipped, being slower; docs/triton.md, "Accumulation").

    python benchmarks/diag_accumulation.py --out accumulation.json
"""

from __future__ import annotations

import argparse
import json

import torch

import hipbmm_inductor as hi
from hipbmm_inductor.ops import triton_configs as C
from hipbmm_inductor.ops import triton_fp8_gemm as T


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="accumulation.json")
    args = p.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    rows = []
    for M, N, K in [(16, 4096, 4096), (256, 4096, 4096), (4096, 4096, 4096), (256, 4096, 14336),
                    (4096, 4096, 14336), (1024, 8192, 28672)]:
        A = (torch.randn(M, K, device=dev) * 2).to(torch.float8_e4m3fn)
        W = (torch.randn(N, K, device=dev) * 2).to(torch.float8_e4m3fn)
        B = hi.prepack_weight(W)
        sa = torch.rand(M, 1, device=dev) * 0.01 + 1e-3
        sb = torch.rand(1, N, device=dev) * 0.01 + 1e-3
        ref = (A.double() @ W.double().t()) * sa.double() * sb.double()
        ref_bf16 = ref.to(torch.bfloat16).double()  # the best any bf16 output can do

        def err(out: torch.Tensor) -> float:
            return ((out.double() - ref).norm() / ref.norm()).item()

        outs = {
            "bf16 rounding of the exact result (floor)": ref_bf16,
            "torch._scaled_mm use_fast_accum=False": torch._scaled_mm(
                A, W.t(), sa, sb, out_dtype=torch.bfloat16, use_fast_accum=False),
            "torch._scaled_mm use_fast_accum=True": torch._scaled_mm(
                A, W.t(), sa, sb, out_dtype=torch.bfloat16, use_fast_accum=True),
        }
        hopper = T.hopper_path(dev, torch.float8_e4m3fn)
        portable = C.heuristic_config(M, N, K)
        outs["triton portable, promoted every BLOCK_K"] = T.launch(portable, A, B, sa, sb, None, torch.bfloat16)
        outs["triton portable, unpromoted (fast)"] = T.launch(
            C.heuristic_config(M, N, K, fast_accum=True), A, B, sa, sb, None, torch.bfloat16, fast_accum=True)
        if hopper and M > 16:
            outs["triton sm_90 Gluon kernel (promoted)"] = T.launch(
                C.heuristic_config(M, N, K, hopper=True), A, B, sa, sb, None, torch.bfloat16)
        cfg = portable
        rec = {"M": M, "N": N, "K": K, "config": cfg, "rel_err": {k: err(v) for k, v in outs.items()}}
        rows.append(rec)
        print(f"M={M} N={N} K={K}", flush=True)
        for k, v in rec["rel_err"].items():
            print(f"   {k:45s} {v:.3e}", flush=True)
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
