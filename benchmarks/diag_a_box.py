"""Does the sm_90 Gluon kernel pay for A's rows past M? A diagnostic behind ``a_boxes``.

For M below the tile's 64 rows, times the Gluon kernel on A as given (TMA boxes past M read
zeros) against the same A padded with zero rows to 64 (every box row in bounds), for a few
decode shapes and configs, next to the heuristic's choice; rotating inputs, CUDA graphs
(``timing.time_graph``). Equal columns mean box rows past M cost nothing.

Run on the kernel before ``a_boxes`` (one 64-row box at any M; ``h100/diag_a_box_before.json``)
it showed the copy engine spending time on every box row, read or not; run now it checks that
8-row boxes leave nothing to gain from padding.

    python benchmarks/diag_a_box.py --out diag.json
"""

from __future__ import annotations

import argparse
import json

import torch

from hipbmm_inductor import timing

import hipbmm_inductor as hi
from hipbmm_inductor.bench.inputs import make_sets
from hipbmm_inductor.timing import time_graph
from hipbmm_inductor.ops import triton_configs as C
from hipbmm_inductor.ops import triton_fp8_gemm as T
from hipbmm_inductor.ops import triton_fp8_hopper as H


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="4096,14336;4096,4096;10240,8192;6144,4096")
    p.add_argument("--m", default="1,16,64")
    p.add_argument("--out", default="diag_a_box.json")
    args = p.parse_args()
    dev = torch.device("cuda")
    hi.set_backend("triton")
    l2 = timing.cache_bytes(dev)  # the last-level cache (MI300: the Infinity Cache)
    configs = [C.make_hopper_config(64, 32, 256, 6), C.make_hopper_config(64, 64, 256, 6),
               C.make_hopper_config(64, 128, 256, 3)]
    rows = []
    for shape in args.shapes.split(";"):
        N, K = (int(x) for x in shape.split(","))
        for M in (int(m) for m in args.m.split(",")):
            sets = make_sets(M, N, K, torch.float8_e4m3fn, False, dev, l2, False)
            n = len(sets)
            padded = []
            for s in sets:
                a = torch.zeros(64, K, device=dev, dtype=s.A.dtype)
                a[:M] = s.A
                padded.append((a, torch.ones(64, 1, device=dev)))
            row = {"N": N, "K": K, "M": M}
            heur = C.heuristic_config(M, N, K, False, T.hopper_path(dev, torch.float8_e4m3fn))
            row["heuristic_us"] = time_graph(lambda i: T.launch(heur, sets[i].A, sets[i].B, sets[i].scale_a,
                                                                sets[i].scale_b, None, torch.bfloat16), n, 0.5, 5)
            for cfg in configs:
                key = f"{cfg['BLOCK_M']}x{cfg['BLOCK_N']}x{cfg['BLOCK_K']}/{cfg['num_stages']}"
                row[key + "_us"] = time_graph(lambda i: H.launch(cfg, sets[i].A, sets[i].B, sets[i].scale_a,
                                                                 sets[i].scale_b, None, torch.bfloat16), n, 0.5, 5)
                row[key + "_padded_us"] = time_graph(lambda i: H.launch(cfg, padded[i][0], sets[i].B, padded[i][1],
                                                                        sets[i].scale_b, None, torch.bfloat16), n, 0.5, 5)
            if T._hopper_failed:
                raise RuntimeError("the sm_90 Gluon kernel failed (see the warning): its timings would be the fallback's")
            print({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
            rows.append(row)
            sets.clear()
            padded.clear()
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "triton": __import__("triton").__version__, "points": rows}, f, indent=1)


if __name__ == "__main__":
    main()
