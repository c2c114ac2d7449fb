import torch, json, os
import hipbmm_inductor as hi
from hipbmm_inductor.bench import _make_sets, time_graph
from hipbmm_inductor.ops import triton_configs as C
from hipbmm_inductor.ops import triton_fp8_gemm as T
from hipbmm_inductor.ops.reference import reference_hipb_mm_fp8
dev = torch.device("cuda"); l2 = torch.cuda.get_device_properties(dev).L2_cache_size
space = [C.make_hopper_config(64, bn, bk, st) for bn in (32, 64) for bk in (128, 256) for st in (3, 4, 6)]
res = []
for N, K in [(4096, 4096), (6144, 4096), (8192, 8192), (4096, 14336), (10240, 8192), (8192, 28672)]:
    for M in (1, 16, 64):
        sets = _make_sets(M, N, K, torch.float8_e4m3fn, False, dev, l2, False); n = len(sets)
        base = time_graph(lambda i: torch._scaled_mm(sets[i].A, sets[i].W.t(), sets[i].scale_a, sets[i].scale_b, out_dtype=torch.bfloat16), n, target_ms=1, repeats=7)
        heur = C.heuristic_config(M, N, K, False, True)
        ref = reference_hipb_mm_fp8(sets[0].A, sets[0].B, sets[0].scale_a, sets[0].scale_b).float()
        rows = []
        for cfg in [heur] + space:
            if C.hopper_smem_bytes(cfg) > C.HOPPER_SMEM_BYTES: continue
            out = T.launch(cfg, sets[0].A, sets[0].B, sets[0].scale_a, sets[0].scale_b, None, torch.bfloat16).float()
            err = ((out - ref).norm() / ref.norm()).item(); assert err < 1e-2, (cfg, err)
            us = time_graph(lambda i: T.launch(cfg, sets[i].A, sets[i].B, sets[i].scale_a, sets[i].scale_b, None, torch.bfloat16), n, target_ms=1, repeats=7)
            rows.append((us, cfg))
        assert not T._hopper_failed
        h = rows[0][0]; rows.sort(key=lambda r: r[0])
        print(f"N={N} K={K} M={M} base {base:.1f} heur {h:.1f} | " + " | ".join(f"{us:.1f} {c['BLOCK_N']}x{c['BLOCK_K']}/{c['num_stages']}{'H' if c['HOPPER'] else 'P'}" for us, c in rows[:4]), flush=True)
        res.append({"N": N, "K": K, "M": M, "baseline_us": base, "heuristic_us": h, "top": [{"us": us, "config": c} for us, c in rows[:8]]})
json.dump({"device": torch.cuda.get_device_name(), "points": res}, open(os.environ["OUT"] + "/bn32.json", "w"), indent=1)
