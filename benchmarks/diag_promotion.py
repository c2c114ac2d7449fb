"""Does every sm_90 config promote as exactly as cuBLASLt? The evidence behind the Gluon kernel's
128-product chains (docs/benchmarks.md, "Where the time goes (H200)").

The tests' elementwise bound (2^-13 of the sum of |products|) is loose enough to pass a kernel
that accumulates unpromoted. What tells the two apart are values that cancel: there a chain's
lost bits are a large part of the result. On one set of fresh random inputs (``bench.inputs``,
seed 0) per shape, this counts the elements whose error from float64 exceeds 4x that of
``torch._scaled_mm`` rowwise with ``use_fast_accum=False`` plus 1% of the value, for each config
family of the sm_90 kernel (``BLOCK_K`` 128 and 256, one- and two-part tiles, 256-wide tiles)
and, for scale, for ``_scaled_mm`` with fast accumulation.

    python benchmarks/diag_promotion.py --out diag_promotion.json
"""

from __future__ import annotations

import argparse
import json

import torch

from hipbmm_inductor.bench.inputs import random_inputs
from hipbmm_inductor.bench.suites import parse_ints
from hipbmm_inductor.ops import triton_configs as C

CONFIGS = [(64, 128, 128, 4), (128, 128, 128, 4), (128, 64, 128, 4), (64, 32, 128, 6), (128, 160, 128, 4),
           (64, 96, 128, 4), (128, 96, 256, 3), (128, 128, 256, 3), (128, 256, 128, 4), (64, 32, 256, 6)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="256,10240,8192;64,4096,14336", help="'M,N,K;...'")
    p.add_argument("--out", default="diag_promotion.json")
    args = p.parse_args()
    try:
        shapes = [tuple(parse_ints(s, "--shapes")) for s in args.shapes.split(";") if s.strip()]
    except ValueError as e:
        p.error(str(e))
    if not shapes or any(len(s) != 3 for s in shapes):
        p.error(f"--shapes: expected 'M,N,K;...', got {args.shapes!r}")
    from hipbmm_inductor.ops import triton_fp8_hopper as H  # Gluon: a Triton with it, on sm_90

    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "points": []}
    torch.manual_seed(0)
    for M, N, K in shapes:
        s = random_inputs(M, N, K, torch.float8_e4m3fn, False, "cuda")
        truth = (s.A.double() @ s.W.double().t()) * s.scale_a.double() * s.scale_b.double()
        base = torch._scaled_mm(s.A, s.W.t(), s.scale_a, s.scale_b, out_dtype=torch.bfloat16).double()
        base_err = (base - truth).abs()

        def row(what: str, o: torch.Tensor) -> None:
            r = {"what": what, "M": M, "N": N, "K": K,
                 "rel_vs_scaled_mm": ((o - base).norm() / base.norm()).item(),
                 "rel_vs_float64": ((o - truth).norm() / truth.norm()).item(),
                 "elements_off": int(((o - truth).abs() > 4 * base_err + 1e-2 * truth.abs()).sum())}
            out["points"].append(r)
            print(r, flush=True)

        row("_scaled_mm use_fast_accum=True", torch._scaled_mm(s.A, s.W.t(), s.scale_a, s.scale_b,
                                                                out_dtype=torch.bfloat16, use_fast_accum=True).double())
        for cfg in CONFIGS:
            if C.fits(C.make_hopper_config(*cfg), N, K):
                o = H.launch(C.make_hopper_config(*cfg), s.A, s.B, s.scale_a, s.scale_b, None, torch.bfloat16)
                row("gluon %dx%dx%d/%d" % cfg, o.double())
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
