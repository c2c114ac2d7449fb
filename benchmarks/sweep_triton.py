"""Sweep Triton configs for a few key shapes: the evidence behind ``heuristic_config``.

One question: for each (N, K, M), which launch config of the preshuffled FP8 kernel is fastest
on this GPU, and how far is the heuristic from it? Times each config with CUDA-graph replays on
rotating inputs (larger than 3x L2, as ``bench`` does), next to ``torch._scaled_mm`` rowwise.
Also measures host overhead per call (M = 1) of: the whole op, the bare launcher, _scaled_mm.

    python benchmarks/sweep_triton.py --out sweep.json --budget-s 300

On a fresh machine most of a sweep's time is Triton compiling each (config, M) variant once:
``--precompile J`` compiles every variant the sweep will launch first, in ``J`` processes that
share one Triton cache (``TRITON_CACHE_DIR``), on tiny problems with the same specialisations;
the timing process then loads them from that cache. ``--precompile-only`` stops there (to warm
the cache for a later ``bench`` in the same machine, with ``--space heuristic``).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import multiprocessing
import time
import traceback

import torch

import hipbmm_inductor as hi
from hipbmm_inductor import timing
from hipbmm_inductor.bench.inputs import make_sets
from hipbmm_inductor.bench.suites import parse_ints, parse_shapes
from hipbmm_inductor.cli.args import count, positive_int
from hipbmm_inductor.timing import copy_bandwidth, time_graph, time_graphs
from hipbmm_inductor.ops import triton_configs as C
from hipbmm_inductor.ops import triton_fp8_gemm as T


def candidates(M: int, N: int, K: int, promoted: bool = True) -> list[dict]:
    """Hand-written search spaces for the portable kernel (``--space sweep``; results in
    ``benchmarks/results/h100/sweep_small_m.json``, ``sweep_mid_m.json``, ``sweep_large_m.json``)."""
    c = C.make_config
    if promoted and M > 64:
        # Promotion (Triton's, every BLOCK_K products) makes each step wait for its wgmma: a
        # BLOCK_K of 256 halves the waits; several CTAs per SM (4-warp tiles) may hide them.
        tiles = [(64, 128, 4), (128, 64, 4), (64, 256, 4), (128, 128, 8), (128, 256, 8), (256, 128, 8),
                 (256, 64, 8)]
        space = [dict(c(bm, bn, bk, w, st), A_TMA=tma) for (bm, bn, w), bk, st, tma
                 in itertools.product(tiles, (128, 256), (2, 3, 4), (0, 1))]
        return [cfg for cfg in space if C.fits(cfg, N, K)]
    if M <= 16:
        space = [c(16, bn, bk, 4, st, sk) for bn, bk, st, sk in
                 itertools.product((32, 64, 128), (128, 256), (3, 4, 6), (1, 2, 4))]
    elif M <= 64:
        space = [c(bm, bn, bk, 4, st, sk) for bm, bn, bk, st, sk in
                 itertools.product((32, 64), (32, 64, 128), (128, 256), (3, 4), (1, 2))]
    elif M <= 256:
        space = [dict(c(bm, bn, 128, w, st, swap_ab=sw), A_TMA=tma) for bm, bn, w, st, sw, tma in
                 itertools.product((64, 128, 256), (64, 128, 256), (4, 8), (3, 4), (0, 1), (0, 1))
                 if bm * bn <= 128 * 256 and not (bm == 256 and w == 4) and (tma or sw)]
    else:
        space = [dict(c(bm, bn, bk, 8, st, swap_ab=sw), A_TMA=tma) for bm, bn, bk, st, sw, tma in
                 itertools.product((128, 256), (128, 256), (64, 128), (3, 4), (0, 1), (0, 1))
                 if not (bm == 256 and bn == 256) and (tma or sw)]
    return [cfg for cfg in space if C.fits(cfg, N, K)]


def host_overhead(device) -> dict:
    """Microseconds of host time per call at M=1 (GPU work is smaller, so the host is the bound)."""
    N, K = 4096, 4096
    sets = make_sets(1, N, K, torch.float8_e4m3fn, True, device, 0, False)
    s = sets[0]
    cfg = C.heuristic_config(1, N, K)
    fns = {
        "op (custom op + validation + tuning lookup + launch)": lambda: hi.hipb_mm_fp8(s.A, s.B, s.scale_a, s.scale_b, s.bias),
        "backend.run (tuning lookup + launch)": lambda: hi.ops.registry.backend_for(s.A.device).run(s.A, s.B, s.scale_a, s.scale_b, s.bias, torch.bfloat16),
        "launcher only": lambda: T.launch(cfg, s.A, s.B, s.scale_a, s.scale_b, s.bias, torch.bfloat16),
        "check_inputs only": lambda: hi.ops.check_inputs(s.A, s.B, s.scale_a, s.scale_b, s.bias, torch.bfloat16),
        "torch._scaled_mm": lambda: torch._scaled_mm(s.A, s.W.t(), s.scale_a, s.scale_b, bias=s.bias, out_dtype=torch.bfloat16),
    }
    out = {}
    for name, f in fns.items():
        for _ in range(50):
            f()
        torch.cuda.synchronize()
        best = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(500):
                f()
            best.append((time.perf_counter() - t) / 500 * 1e6)
            torch.cuda.synchronize()
        out[name] = min(best)
        print(f"host {name:55s} {out[name]:7.1f} us/call", flush=True)
    return out


def _precompile_worker(jobs: list) -> tuple[int, list]:
    """Launch each ``(config, M, N, K, fast)`` once on a tiny problem of the same
    specialisation (M itself; N and K multiples of 16 like every real shape), so that Triton
    compiles it into the shared on-disk cache. Returns (compiled, failures)."""
    dev = torch.device("cuda")
    ok, bad = 0, []
    for cfg, M, n, k, fast in jobs:
        try:
            A = (torch.randn(M, k, device=dev) * 2).to(torch.float8_e4m3fn)
            W = (torch.randn(n, k, device=dev) * 2).to(torch.float8_e4m3fn)
            B = hi.prepack_weight(W)
            sa = torch.rand(M, 1, device=dev) + 0.5
            sb = torch.rand(1, n, device=dev) + 0.5
            T.launch(cfg, A, B, sa, sb, None, torch.bfloat16, fast_accum=fast)
            if cfg["HOPPER"] and T._hopper_failed:
                T._hopper_failed.clear()
                T.hopper_path.cache_clear()
                raise RuntimeError("the Gluon kernel failed to compile or launch (see the warning)")
            ok += 1
        except Exception as e:  # noqa: BLE001 - reported; the timing pass will skip it too
            bad.append((cfg, M, f"{type(e).__name__}: {str(e)[:160]}"))
    torch.cuda.synchronize()
    return ok, bad


def _tiny_shape(cfg: dict) -> tuple[int, int]:
    # N, K as small as the config takes, both multiples of 16 (Triton's integer specialisation).
    n = max(256, cfg["BLOCK_N"])
    k = max(512, 2 * cfg["BLOCK_K"] * cfg["SPLIT_K"])
    return n, k


def precompile(plan: list[tuple[int, list[dict]]], fast: bool, workers: int) -> dict:
    """Compile every (config, M) variant of ``plan`` ([(M, configs)]) in ``workers`` processes;
    returns a summary and the variants that failed (the timing pass skips them)."""
    seen, jobs = set(), []
    for M, cfgs in plan:
        for cfg in cfgs:
            key = _variant_key(cfg, M)
            if key in seen:
                continue
            seen.add(key)
            jobs.append((cfg, M, *_tiny_shape(cfg), fast))
    t0 = time.time()
    chunks = [jobs[i::workers] for i in range(workers)]
    ok, bad = 0, []
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for n_ok, n_bad in pool.map(_precompile_worker, [c for c in chunks if c]):
            ok += n_ok
            bad += n_bad
    print(f"precompiled {ok} of {len(jobs)} variants in {time.time() - t0:.0f} s with {workers} processes", flush=True)
    for cfg, M, why in bad[:20]:
        print("  precompile FAIL", M, cfg, why, flush=True)
    summary = {"variants": len(jobs), "compiled": ok, "seconds": time.time() - t0,
               "failures": [{"M": M, "config": cfg, "error": why} for cfg, M, why in bad]}
    return summary, {_variant_key(cfg, M) for cfg, M, _ in bad}


def _variant_key(cfg: dict, M: int) -> tuple:
    """What one compiled kernel serves: the config, its A boxes at this M, and Triton's
    specialisation of M (== 1, % 16 == 0)."""
    from hipbmm_inductor.ops import triton_fp8_hopper as H

    boxes = H.a_boxes(M, cfg["BLOCK_M"]) if cfg["HOPPER"] else None
    return tuple(sorted(cfg.items())), boxes, M == 1, M % 16 == 0


def _extra_hopper(text: str) -> list[dict]:
    out = []
    for part in text.replace(" ", "").split(";"):
        if part:
            try:
                bm, bn, bk, st = (int(x) for x in part.split(","))
            except ValueError:
                raise ValueError(f"--extra-hopper: {part!r} is not BM,BN,BK,STAGES (four integers)") from None
            cfg = C.make_hopper_config(bm, bn, bk, st)
            from hipbmm_inductor.ops import triton_fp8_hopper as H

            try:
                H.check_config(cfg, bk)  # the kernel's own rules (K is checked per shape by fits)
            except ValueError as e:
                raise ValueError(f"--extra-hopper: {part!r}: {e}") from None
            out.append(cfg)
    return out


def _space(args, M: int, N: int, K: int, fast: bool, hopper: bool, block_m) -> tuple[list[dict], dict]:
    """The configs timed at one point, and the heuristic's."""
    heur = C.heuristic_config(M, N, K, fast, hopper)
    if args.space == "production":
        space = C.config_space(M, N, K, fast, hopper)
    elif args.space == "hopper":
        space = [c for c in C.hopper_configs() + _extra_hopper(args.extra_hopper) if C.fits(c, N, K)]
        # No 128-row tiles for a weight stream (they double its tensor work), and no 64-row
        # ones from M = 2048, where they only add L2 traffic per FLOP (h100/sweep_hopper_tma.json).
        space = [c for c in space if (M > 16 or c["BLOCK_M"] == 64) and (M < 2048 or c["BLOCK_M"] == 128)]
        if N <= args.portable_for_n and M <= 64:
            # Narrow weights stream on few programs: the portable kernel's split-K may win there.
            port = [C.make_config(16, bn, bk, 4, 4, split_k=sk) for bn in (32, 64) for bk in (128, 256)
                    for sk in (1, 2, 4, 8, 16)]
            space += [c for c in port if C.fits(c, N, K)]
    elif args.space == "heuristic":
        space = []
    else:
        space = candidates(M, N, K, not fast)
    if block_m is not None:
        space = [c for c in space if c["BLOCK_M"] in block_m]
    unique = []
    for c in space + [heur]:
        if c not in unique:
            unique.append(c)
    return unique, heur


def _launch(cfg, sets, fast, i):
    return T.launch(cfg, sets[i].A, sets[i].B, sets[i].scale_a, sets[i].scale_b, None, torch.bfloat16, fast_accum=fast)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="4096,4096;28672,4096;4096,14336")
    p.add_argument("--m", default="1,16,64,256,1024,4096")
    p.add_argument("--budget-s", type=float, default=300)
    p.add_argument("--out", default="sweep.json")
    p.add_argument("--accumulation", choices=("promoted", "fast"), default="promoted",
                   help="the kernel's accumulation; the baseline runs in the same mode (use_fast_accum)")
    p.add_argument("--no-host", action="store_true", help="skip the host-overhead measurement")
    p.add_argument("--space", choices=("sweep", "production", "hopper", "heuristic"), default="sweep",
                   help="'production': the tuner's config_space (with the sm_90 Gluon configs where they run); "
                        "'hopper': every sm_90 Gluon config, at any M; 'heuristic': the heuristic's config alone")
    p.add_argument("--extra-hopper", default="",
                   help="'BM,BN,BK,STAGES;...': sm_90 configs timed beside --space hopper's")
    p.add_argument("--portable-for-n", type=count, default=0,
                   help="with --space hopper at M <= 64: also the portable kernel's configs (split-K up to 16) "
                        "for weights with N <= this")
    p.add_argument("--top", type=positive_int, default=8, help="configs kept per point, fastest first")
    p.add_argument("--precompile", type=count, default=0,
                   help="compile every (config, M) variant first in this many processes (shared Triton cache)")
    p.add_argument("--precompile-only", action="store_true", help="stop after --precompile")
    p.add_argument("--target-ms", type=float, default=2.0, help="with --interleave: milliseconds per timed replay")
    p.add_argument("--repeats", type=positive_int, default=9, help="with --interleave: replays per config (median)")
    p.add_argument("--block-m", default=None,
                   help="only configs with these BLOCK_M values, e.g. '64' (comma-separated)")
    p.add_argument("--interleave", action="store_true",
                   help="time all configs and the baseline taking turns (as bench does): for long, "
                        "power-limited GEMMs, where clocks drift between back-to-back timings")
    args = p.parse_args()
    if args.precompile_only and not args.precompile:
        p.error("--precompile-only needs --precompile N (the processes to compile in)")
    if not args.target_ms > 0 or not args.budget_s > 0:
        p.error("--target-ms and --budget-s must be > 0")
    try:
        block_m = None if args.block_m is None else set(parse_ints(args.block_m, "--block-m"))
        ms = parse_ints(args.m, "--m")
        shapes = parse_shapes(args.shapes)
        _extra_hopper(args.extra_hopper)  # parsed here once, so that a bad value is one error, not one per point
    except ValueError as e:
        p.error(str(e))
    dev = torch.device("cuda")
    hi.set_backend("triton")
    fast = args.accumulation == "fast"  # like with like: the vendor's fast accumulation, or not
    hopper = T.hopper_path(dev, torch.float8_e4m3fn)
    pre, failed = None, set()
    if args.precompile:
        plan = [(M, _space(args, M, N, K, fast, hopper, block_m)[0]) for M in ms for N, K in shapes]
        pre, failed = precompile(plan, fast, args.precompile)
        if args.precompile_only:
            return
    l2 = timing.cache_bytes(dev)  # the last-level cache (MI300: the Infinity Cache)
    bw = copy_bandwidth(dev)
    print(f"{torch.cuda.get_device_name()} copy {bw / 1e12:.2f} TB/s", flush=True)
    result = {"device": torch.cuda.get_device_name(), "copy_bandwidth_TBps": bw / 1e12,
              "chip": C.hopper_chip(dev) if hopper else None, "accumulation": args.accumulation,
              "precompile": pre, "host_overhead_us": None if args.no_host else host_overhead(dev), "points": []}
    t0 = time.time()
    for M in ms:
        for N, K in shapes:
            if time.time() - t0 > args.budget_s:
                break
            try:
                _point(args, result, M, N, K, fast, hopper, block_m, failed, dev, l2, bw)
            except Exception:  # noqa: BLE001 - one point's failure must not lose the sweep
                print(f"POINT FAILED N={N} K={K} M={M}:", traceback.format_exc()[-1500:], flush=True)
                result.setdefault("failed_points", []).append({"N": N, "K": K, "M": M})
            torch.cuda.empty_cache()
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
    result["sweep_s"] = time.time() - t0
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"sweep done in {time.time() - t0:.0f} s", flush=True)


def _point(args, result, M, N, K, fast, hopper, block_m, failed, dev, l2, bw) -> None:
    """Time one (N, K, M): every config of the space that computes the right numbers, and the
    baseline; append the point to ``result``."""
    sets = make_sets(M, N, K, torch.float8_e4m3fn, False, dev, l2, False)
    n = len(sets)
    base_call = lambda i: torch._scaled_mm(sets[i].A, sets[i].W.t(), sets[i].scale_a,  # noqa: E731
                                           sets[i].scale_b, out_dtype=torch.bfloat16, use_fast_accum=fast)
    ref = hi.ops.reference.reference_hipb_mm_fp8(sets[0].A, sets[0].B, sets[0].scale_a, sets[0].scale_b).float()
    space, heur = _space(args, M, N, K, fast, hopper, block_m)  # the one the precompile plan also uses
    rows = []
    for cfg in space:
        if _variant_key(cfg, M) in failed:
            continue
        try:
            out = T.launch(cfg, sets[0].A, sets[0].B, sets[0].scale_a, sets[0].scale_b, None, torch.bfloat16,
                           fast_accum=fast).float()
            if cfg["HOPPER"] and T._hopper_failed:
                # One config that will not compile must not send the rest to the fallback.
                print("  FAIL (Gluon)", cfg, flush=True)
                T._hopper_failed.clear()
                T.hopper_path.cache_clear()
                continue
            err = ((out - ref).norm() / ref.norm()).item()
            if not err < 1e-2:
                print("  BAD", cfg, err, flush=True)
                continue
            rows.append((functools.partial(_launch, cfg, sets, fast), cfg))
        except Exception as e:  # out of resources etc.: skip the config, say why
            print("  FAIL", cfg, type(e).__name__, str(e)[:120], flush=True)
    timed = None
    if args.interleave:
        # Every config and the baseline take turns, replay by replay: a long GEMM runs at
        # the power limit, and clocks that drift between configs would rank the drift.
        # (Every config's graph is alive at once: at 57344 x 4096 outputs that is ~15 GB.)
        try:
            base, *times = time_graphs([base_call] + [call for call, _ in rows], n,
                                       target_ms=args.target_ms, repeats=args.repeats)
            timed = [(us, cfg) for us, (_, cfg) in zip(times, rows)]
        except Exception as e:  # a config that runs but will not capture: time each alone
            print("  interleaved timing failed, timing configs one by one:", type(e).__name__,
                  str(e)[:120], flush=True)
    if timed is None:
        base = time_graph(base_call, n, target_ms=0.5, repeats=5)
        timed = []
        for call, cfg in rows:
            try:
                timed.append((time_graph(call, n, target_ms=0.5, repeats=5), cfg))
            except Exception as e:  # noqa: BLE001 - will not capture: skip the config, say why
                print("  FAIL", cfg, type(e).__name__, str(e)[:120], flush=True)
    rows = timed
    if T._hopper_failed:
        raise RuntimeError("the sm_90 Gluon kernel failed (see the warning): its timings would be the fallback's")
    rows.sort(key=lambda r: r[0])
    heur_us = next(us for us, c in rows if c == heur) if any(c == heur for _, c in rows) else float("nan")
    floor = (M * K + N * K + 2 * M * N) / bw * 1e6
    print(f"N={N} K={K} M={M}: base {base:.1f} us, heuristic {heur_us:.1f} us, floor {floor:.1f} us; best:", flush=True)
    for us, cfg in rows[:4]:
        print(f"   {us:8.1f} us  x{base / us:4.2f}  {cfg}", flush=True)
    result["points"].append({"N": N, "K": K, "M": M, "baseline_us": base, "heuristic_us": heur_us,
                             "heuristic": heur, "floor_us": floor, "configs_timed": len(rows),
                             "top": [{"us": us, "config": c} for us, c in rows[:args.top]]})
    sets.clear()


if __name__ == "__main__":
    main()
