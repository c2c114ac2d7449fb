import sys, os, time, torch
sys.path.insert(0, os.path.dirname(__file__))
import hipbmm_inductor as hi
from hipbmm_inductor.bench import _make_sets, time_graph
from _scratch_glk import launch_gl

dev = torch.device("cuda")
torch.manual_seed(0)
# numerics first
for (M, N, K) in [(200, 512, 1024), (256, 4096, 4096), (1000, 1024, 8192)]:
    A = (torch.randn(M, K, device=dev) * 2).to(torch.float8_e4m3fn)
    W = (torch.randn(N, K, device=dev) * 2).to(torch.float8_e4m3fn)
    B = hi.prepack_weight(W)
    sa = torch.rand(M, 1, device=dev) * 0.01 + 1e-3
    sb = torch.rand(1, N, device=dev) * 0.01 + 1e-3
    bias = torch.randn(N, device=dev).to(torch.bfloat16)
    ref = (A.double() @ W.double().t()) * sa.double() * sb.double() + bias.double()
    floor = ((ref.to(torch.bfloat16).double() - ref).norm() / ref.norm()).item()
    for cfg in [dict(BM=128, BN=128, warps=8), dict(BM=128, BN=128, BK=256, ST=3, SUB=2, warps=8),
                dict(BM=128, BN=128, BK=256, ST=3, SUB=1, warps=8), dict(BM=64, BN=128, BK=256, ST=3, SUB=2, warps=4)]:
        try:
            out = launch_gl(A, B, sa, sb, bias, torch.bfloat16, **cfg)
            torch.cuda.synchronize()
            e = ((out.double() - ref).norm() / ref.norm()).item()
            print(f"M={M} N={N} K={K} {cfg}: rel err / floor = {e / floor:.4f}", flush=True)
        except Exception as ex:
            print(f"M={M} N={N} K={K} {cfg}: FAIL {type(ex).__name__}: {str(ex)[-1500:]}", flush=True)
l2 = torch.cuda.get_device_properties(dev).L2_cache_size
cfgs = [dict(BM=bm, BN=bn, BK=bk, ST=st, SUB=sub, warps=w) for (bm, bn, w) in [(128, 128, 8), (64, 128, 4), (128, 64, 8), (64, 64, 4), (128, 256, 8)]
        for (bk, sub) in ((128, 1), (256, 1), (256, 2)) for st in (2, 3, 4)
        if not (bn == 256 and sub == 2)]
for (N, K) in [(4096, 4096), (28672, 4096), (4096, 14336), (8192, 8192)]:
    for M in (64, 128, 256, 1024, 4096):
        sets = _make_sets(M, N, K, torch.float8_e4m3fn, False, dev, l2, False)
        n = len(sets)
        base = time_graph(lambda i: torch._scaled_mm(sets[i].A, sets[i].W.t(), sets[i].scale_a, sets[i].scale_b, out_dtype=torch.bfloat16), n, target_ms=0.5, repeats=5)
        rows = []
        for cfg in cfgs:
            if (cfg["BM"] + cfg["BN"]) * cfg["BK"] * cfg["ST"] > 200 * 1024 or (cfg["BK"] == 128 and cfg["ST"] == 2):
                continue
            try:
                us = time_graph(lambda i: launch_gl(sets[i].A, sets[i].B, sets[i].scale_a, sets[i].scale_b, None, torch.bfloat16, **cfg), n, target_ms=0.5, repeats=5)
                rows.append((us, cfg))
            except Exception as ex:
                print("  FAIL", cfg, type(ex).__name__, str(ex)[:200], flush=True)
        rows.sort(key=lambda r: r[0])
        print(f"N={N} K={K} M={M}: base {base:.1f}", flush=True)
        for us, cfg in rows[:4]:
            print(f"    {us:8.1f} x{base / us:.2f} {cfg}", flush=True)
        del sets
        torch.cuda.empty_cache()
