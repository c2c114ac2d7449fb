"""Where a decode GEMM's time goes: the sm_90 kernel next to the cheapest kernels that move the
same bytes. A diagnostic behind the memory-floor target at M <= 64 (docs/benchmarks.md).

For each shape and M, on rotating inputs (``bench.inputs.rotation``: no call finds its weight in L2),
in CUDA graphs, all columns timed in turns under one clock (``timing.time_graphs``):

- ``ours_us``: the op's Triton backend, heuristic config;
- ``old_us`` (with ``--old-module``): the same config on another build of the sm_90 kernel,
  for an A/B inside one run;
- ``base_us``: ``torch._scaled_mm`` rowwise (cuBLASLt);
- ``<config>_us`` (with ``--configs``): other sm_90 configs on the same inputs;
- ``read_us``: the fastest of a few Triton kernels that only read the weight's bytes (16-byte
  vector loads, an xor kept so nothing is optimised away): ``read_c*`` give each program one
  contiguous share, ``read_s*`` stride the programs through the weight block by block, so that
  the whole grid reads one compact window at a time (1 to 16 programs per SM): what a kernel
  that reads W pays, the fixed costs of a launch included;
- ``gemv_us``: cuBLAS's bf16 GEMM (``F.linear``) on a random bf16 weight of the same size, N x K/2: a
  memory-bound reader tuned by others, so the read columns do not rest on this file's kernels
  alone;
- ``copy_us``: a device copy moving as many bytes as the GEMM (half read, half written): the
  copy whose bandwidth, measured on 1 GiB, defines the floor, run at this size;
- ``empty_us``: a kernel that does nothing, on the same grid: the fixed cost of a launch in a
  graph;
- ``floor_us``: the bytes the GEMM moves over the device's copy bandwidth (the suite's floor,
  ``bench.gemm.bytes_moved``). The readers move only the weight's share of those bytes (95-100% at
  M <= 64), so their percentages of this floor flatter them slightly.

    python benchmarks/diag_decode.py --out diag_decode.json

The committed results (``benchmarks/results/``): ``h100/diag_decode.json`` (``--configs`` with
deeper rings, with the stage limit relaxed in a build not shipped), ``h100/diag_decode_2cta.json``
(configs run two programs per SM, a launcher option not shipped), ``h100/diag_decode_probe.json``
(``--old-module`` naming a copy of the kernel whose consumer skips the MMA, with
``--no-check-old``; shapes down to K = 256, one stage), ``h100/diag_w_copies.json``
(``--old-module`` on the kernel of then, 2-D W boxes, against a 3-D W copy build), ``h100/diag_direct_store.json``
(the same against a build storing the output from registers), ``h100/diag_m256.json``
(tiles at M = 256). Each file's ``note`` says what its columns were.

``--once`` launches ours and the 8-programs-per-SM contiguous-share reader three times each on the
first shape and M, no timing, for a profiler; ``h100/ncu_decode_*.txt`` came from (on that reader
before its shares were whole blocks, when it issued 4-byte loads)

    ncu --clock-control none --kernel-name regex:"_fp8_gemm_hopper_kernel|_read_kernel" \
        --launch-skip 2 --launch-count 2 --section SpeedOfLight --section LaunchStats \
        --section Occupancy --section MemoryWorkloadAnalysis --section WarpStateStats \
        --section SchedulerStats python benchmarks/diag_decode.py --once --shapes 4096,4096 --m 1
"""

from __future__ import annotations

import argparse
import importlib
import json

import torch

from hipbmm_inductor import hardware, timing
import triton
import triton.language as tl

import hipbmm_inductor as hi
from hipbmm_inductor.bench.gemm import bytes_moved
from hipbmm_inductor.bench.inputs import make_sets
from hipbmm_inductor.bench.suites import parse_ints, parse_shapes
from hipbmm_inductor.timing import copy_bandwidth, time_graphs
from hipbmm_inductor.ops import triton_configs as C
from hipbmm_inductor.ops import triton_fp8_gemm as T
from hipbmm_inductor.ops import triton_fp8_hopper as H


@triton.jit
def _read_kernel(src, out, n_words, BLOCK: tl.constexpr):
    # Each program streams a contiguous share of the words, BLOCK at a time. The share is a whole
    # number of blocks: with a share of no known alignment Triton issues 4-byte loads, not 16.
    pid = tl.program_id(0)
    per = tl.cdiv(tl.cdiv(n_words, tl.num_programs(0)), BLOCK) * BLOCK
    end = tl.minimum(pid * per + per, n_words)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for start in range(pid * per, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc ^= tl.load(src + offs, mask=offs < end, other=0)  # this program's share only
    tl.store(out + pid, tl.reduce(acc, 0, _xor))


@triton.jit
def _read_strided_kernel(src, out, n_words, BLOCK: tl.constexpr):
    # Program p reads blocks p, p + grid, ...: at any moment the grid reads one compact window.
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for start in range(pid * BLOCK, n_words, tl.num_programs(0) * BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc ^= tl.load(src + offs, mask=offs < n_words, other=0)
    tl.store(out + pid, tl.reduce(acc, 0, _xor))


@triton.jit
def _xor(a, b):
    return a ^ b


@triton.jit
def _empty_kernel(out):
    pass


# (programs per SM, int32 words per load step, warps): 1 to 4 16-byte loads per thread per step.
READERS = [(1, 4096, 8), (2, 2048, 8), (4, 1024, 4), (8, 1024, 4), (16, 512, 4)]


def _hopper_config(spec: str) -> tuple:
    """``64x32x256/6`` -> (the sm_90 config BLOCK_M x BLOCK_N x BLOCK_K / stages, None); a suffix
    ``@P`` runs it on a persistent grid of P programs, ``@balanced`` on as few as keep its waves
    (:func:`balanced_programs`); ``heuristic@...`` names the heuristic's config of each point."""
    tile, _, grid = spec.partition("@")
    try:
        if grid and grid != "balanced" and not (grid.isdigit() and int(grid) > 0):
            raise ValueError(f"the grid after @ must be a positive count or 'balanced', got {grid!r}")
        if tile == "heuristic":
            if not grid:
                raise ValueError("'heuristic' is the ours column already: give it a grid, @P or @balanced")
            return None, grid
        tile, stages = tile.split("/")
        bm, bn, bk = (int(x) for x in tile.split("x"))
        config = C.make_hopper_config(bm, bn, bk, int(stages))
        H.check_config(config, bk)
    except ValueError as e:
        raise ValueError(f"--configs: expected BLOCK_MxBLOCK_NxBLOCK_K/stages (or 'heuristic') of a valid sm_90 "
                         f"config, optionally @programs or @balanced, got {spec!r} ({e})")
    return config, grid or None


def balanced_programs(tiles: int, sms: int) -> int:
    """The fewest programs that take ``tiles`` in as many waves as ``sms`` programs do: every
    program gets the same number of tiles (448 tiles on 132 SMs: 112 programs of 4 tiles, not 52
    programs of 4 and 80 of 3)."""
    waves = -(-tiles // sms)
    return -(-tiles // waves)


def _tiles(config: dict, M: int, N: int) -> int:
    return -(-M // config["BLOCK_M"]) * -(-N // config["BLOCK_N"])


def _programs(grid, config: dict, M: int, N: int, sms: int):
    if grid is None:
        return None
    if grid == "balanced":
        return balanced_programs(_tiles(config, M, N), sms)
    return int(grid)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="4096,4096;6144,4096;4096,14336;8192,8192")
    p.add_argument("--m", default="1,16,64")
    p.add_argument("--configs", default="",
                   help="extra sm_90 configs, e.g. 64x32x256/4,64x64x128/6@112,heuristic@balanced")
    p.add_argument("--no-readers", dest="readers", action="store_false",
                   help="time only the GEMMs (no reader, copy or empty-kernel columns)")
    p.add_argument("--old-module", default=None,
                   help="import path of another build of triton_fp8_hopper to time next to this one")
    p.add_argument("--no-check-old", dest="check_old", action="store_false",
                   help="do not require --old-module's output to equal ours (a probe that skips work)")
    p.add_argument("--once", action="store_true",
                   help="launch ours and the 8-programs-per-SM reader 3 times each, no timing")
    p.add_argument("--note", default="", help="what this run's columns were, kept in the output")
    p.add_argument("--out", default="diag_decode.json")
    args = p.parse_args()
    try:  # bad configs are named before any GPU work
        extras = [(spec, _hopper_config(spec)) for spec in filter(None, args.configs.replace(" ", "").split(","))]
    except ValueError as e:
        p.error(str(e))
    dev = torch.device("cuda")
    hi.set_backend("triton")
    l2 = timing.cache_bytes(dev)  # the last-level cache (MI300: the Infinity Cache)
    sms = hardware.sm_count(dev)
    if args.once:
        N, K = parse_shapes(args.shapes)[0]
        M = parse_ints(args.m, "--m")[0]
        s = make_sets(M, N, K, torch.float8_e4m3fn, False, dev, 0, False)[0]
        cfg = C.heuristic_config(M, N, K, False, T.hopper_path(dev, torch.float8_e4m3fn))
        words = s.B.t().view(torch.int32)
        sink = torch.empty(8 * sms, dtype=torch.int32, device=dev)
        for _ in range(3):
            T.launch(cfg, s.A, s.B, s.scale_a, s.scale_b, None, torch.bfloat16)
            _read_kernel[(8 * sms,)](words, sink, words.numel(), BLOCK=1024, num_warps=4)
        torch.cuda.synchronize()
        return
    bw = copy_bandwidth(dev)
    old = importlib.import_module(args.old_module) if args.old_module else None
    # One word per reader program, for the reader with the most programs.
    sink = torch.empty(max(per_sm for per_sm, _, _ in READERS) * sms, dtype=torch.int32, device=dev)
    rows = []
    for N, K in parse_shapes(args.shapes):
        for M in parse_ints(args.m, "--m"):
            sets = make_sets(M, N, K, torch.float8_e4m3fn, False, dev, l2, False)
            n = len(sets)
            cfg = C.heuristic_config(M, N, K, False, T.hopper_path(dev, torch.float8_e4m3fn))
            words = [s.B.t().view(torch.int32) for s in sets]  # the shuffled [N, K] storage, as read
            nbytes = bytes_moved(M, N, K, False)
            half = nbytes // 2
            src = [torch.empty(half, dtype=torch.uint8, device=dev).random_() for _ in range(n)]
            dst = [torch.empty_like(x) for x in src]
            # The same weight bytes as a bf16 weight (cuBLAS's GEMV/GEMM streams it): fresh
            # normal data, so no NaN or denormal path is timed.
            wb = [torch.randn(N, K // 2, dtype=torch.bfloat16, device=dev) for _ in range(n)] if args.readers else []
            xb = [torch.randn(M, K // 2, dtype=torch.bfloat16, device=dev) for _ in range(n)] if args.readers else []
            calls = {
                "ours": lambda i: T.launch(cfg, sets[i].A, sets[i].B, sets[i].scale_a, sets[i].scale_b, None,
                                           torch.bfloat16),
                "base": lambda i: torch._scaled_mm(sets[i].A, sets[i].W.t(), sets[i].scale_a, sets[i].scale_b,
                                                   out_dtype=torch.bfloat16),
                "copy": lambda i: dst[i].copy_(src[i]),
                "empty": lambda i: _empty_kernel[(sms,)](sink),
                "gemv": lambda i: torch.nn.functional.linear(xb[i], wb[i]),
            }
            if not args.readers:
                for k in ("copy", "empty", "gemv"):
                    del calls[k]
            for kind, kernel in (("c", _read_kernel), ("s", _read_strided_kernel)) if args.readers else ():
                for per_sm, block, warps in READERS:
                    calls[f"read_{kind}{per_sm}x{block}w{warps}"] = (
                        lambda i, k=kernel, g=per_sm * sms, b=block, w=warps:
                        k[(g,)](words[i], sink, words[i].numel(), BLOCK=b, num_warps=w))
            for spec, (extra, grid) in extras:
                c = extra or cfg
                if not c.get("HOPPER") or not C.fits(c, N, K) or K % c["BLOCK_K"]:
                    continue
                programs = _programs(grid, c, M, N, sms)
                tiles = _tiles(c, M, N)  # the launcher's grid is min(tiles, programs or SMs)
                if extra is None and (programs is None or min(programs, tiles) == min(sms, tiles)):
                    continue  # the heuristic's config on its own grid: the ours column
                calls[spec] = lambda i, c=c, g=programs: H.launch(c, sets[i].A, sets[i].B, sets[i].scale_a,
                                                                  sets[i].scale_b, None, torch.bfloat16, g)
            if old is not None and cfg.get("HOPPER"):
                calls["old"] = lambda i: old.launch(cfg, sets[i].A, sets[i].B, sets[i].scale_a, sets[i].scale_b,
                                                    None, torch.bfloat16)
                if args.check_old:
                    ref = calls["ours"](0).float()
                    assert torch.equal(calls["old"](0).float(), ref), "the two builds disagree"
            times = time_graphs(list(calls.values()), n, 1.0, 11)
            row = {"N": N, "K": K, "M": M, "config": cfg,
                   "floor_us": nbytes / bw * 1e6}
            row.update({f"{k}_us": t for k, t in zip(calls, times)})
            if args.readers:
                row["read_us"] = min(v for k, v in row.items() if k.startswith("read_"))
            if T._hopper_failed:
                raise RuntimeError("the sm_90 Gluon kernel failed (see the warning): its timings would be the fallback's")
            print({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items() if k != "config"}, flush=True)
            rows.append(row)
            for held in (sets, words, src, dst, wb, xb):  # free this point's inputs before the next
                held.clear()
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                   "copy_bandwidth_TBps": bw / 1e12, "note": args.note, "points": rows}, f, indent=1)


if __name__ == "__main__":
    main()
