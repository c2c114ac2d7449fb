"""Where does the Triton kernel's time go? Layout, loads, and fp32 promotion, measured apart.

A stripped copy of the production main loop (no bias, no split-K) with three switches:

- ``LAYOUT``: 0 = preshuffled, offsets from the SPEC formula (production); 1 = preshuffled, each
  16-row group loaded as one contiguous ``[BLOCK_N/16, 16*BLOCK_K]`` block and reshaped in
  registers; 2 = a plain row-major ``W[N, K]`` (what the kernel would cost without the layout).
  3 = the formula with ``tl.max_contiguous``/``tl.multiple_of`` hints on the k offsets.
- ``SWAP``: compute ``C^T = W A^T`` so the register-permuted W tile is wgmma's A operand.
- ``PROMOTE``: 2 = by hand (``acc += tl.dot(a, w)``, a fresh wgmma sum per BLOCK_K); 1 = promote the fp8 wgmma accumulator to fp32 every BLOCK_K (production) or never
  ("fast accumulation").

Prints times next to ``torch._scaled_mm`` and the PTX facts (vector width of global loads,
cp.async width, wgmma present, registers, spills) for the production kernel.

    python benchmarks/diag_triton_layout.py
"""

from __future__ import annotations

import re

import torch
import triton
import triton.language as tl

import hipbmm_inductor as hi
from hipbmm_inductor.bench import _make_sets, time_graph
from hipbmm_inductor.ops import triton_fp8_gemm as T


@triton.jit
def _diag_kernel(a_ptr, w_ptr, c_ptr, M, N, K, LAYOUT: tl.constexpr, PROMOTE: tl.constexpr, SWAP: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_pid_n
    first_m = (pid // group) * GROUP_M
    group_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % group) % group_m)
    pid_n = (pid % group) // group_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    rows_a = offs_m % M
    rows_w = offs_n % N
    a_ptrs = a_ptr + rows_a.to(tl.int64)[:, None] * K + offs_k[None, :]
    if LAYOUT == 0:
        w_ptrs = w_ptr + ((rows_w // 16).to(tl.int64)[:, None] * (16 * K) + ((rows_w % 16) * 16)[:, None]
                          + ((offs_k // 16) * 256 + offs_k % 16)[None, :])
    elif LAYOUT == 3:
        # The formula again, with the contiguity Triton cannot prove stated: 16 bytes per run.
        koff = tl.max_contiguous(tl.multiple_of((offs_k // 16) * 256 + offs_k % 16, 16), 16)
        w_ptrs = w_ptr + ((rows_w // 16).to(tl.int64)[:, None] * (16 * K) + ((rows_w % 16) * 16)[:, None]
                          + koff[None, :])
    elif LAYOUT == 1:
        g = pid_n * (BLOCK_N // 16) + tl.arange(0, BLOCK_N // 16)
        w_ptrs = w_ptr + g.to(tl.int64)[:, None] * (16 * K) + tl.arange(0, 16 * BLOCK_K)[None, :]
    else:
        w_ptrs = w_ptr + rows_w.to(tl.int64)[:, None] * K + offs_k[None, :]
    if SWAP:
        acc_t = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for i in range(0, K // BLOCK_K):
        a = tl.load(a_ptrs)
        w = tl.load(w_ptrs)
        if LAYOUT == 1:
            w = tl.reshape(w, (BLOCK_N // 16, BLOCK_K // 16, 16, 16))
            w = tl.permute(w, (0, 2, 1, 3))
            w = tl.reshape(w, (BLOCK_N, BLOCK_K))
        if SWAP:
            # C^T = W A^T: the permuted W tile is wgmma's A operand, which may stay in registers.
            if PROMOTE == 2:
                acc_t += tl.dot(w, tl.trans(a))  # promotion by hand: a fresh sum per BLOCK_K
            elif PROMOTE:
                acc_t = tl.dot(w, tl.trans(a), acc_t, max_num_imprecise_acc=BLOCK_K)
            else:
                acc_t = tl.dot(w, tl.trans(a), acc_t)
        elif PROMOTE == 2:
            acc += tl.dot(a, tl.trans(w))
        elif PROMOTE:
            acc = tl.dot(a, tl.trans(w), acc, max_num_imprecise_acc=BLOCK_K)
        else:
            acc = tl.dot(a, tl.trans(w), acc)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K * (16 if LAYOUT != 2 else 1)
    if SWAP:
        acc = tl.trans(acc_t)
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    tl.store(c_ptr + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :], acc.to(tl.bfloat16), mask=mask)


def ptx_facts(compiled) -> str:
    ptx = compiled.asm["ptx"]
    facts = {
        "ld.global.v4": len(re.findall(r"ld\.global(\.\w+)*\.v4", ptx)),
        "ld.global(scalar/v2)": len(re.findall(r"ld\.global(\.\w+)*\.(b8|u8|b16|u16|b32|v2)", ptx)),
        "cp.async 16B": len(re.findall(r"cp\.async\.cg\.shared\.global.*16", ptx)),
        "cp.async <16B": len(re.findall(r"cp\.async\.ca\.shared\.global", ptx)),
        "tma": len(re.findall(r"cp\.async\.bulk", ptx)),
        "wgmma": len(re.findall(r"wgmma\.mma_async", ptx)),
        "mma.sync": len(re.findall(r"mma\.sync", ptx)),
    }
    md = compiled.metadata
    return f"{facts} regs={getattr(compiled, 'n_regs', '?')} spills={getattr(compiled, 'n_spills', '?')} smem={getattr(md, 'shared', '?')}"


import os
VARIANTS = [tuple(int(x) for x in v.split(':')) for v in os.environ.get('DIAG_VARIANTS', '0:0,1:0,2:0,3:0').split(',')]
POINTS = os.environ.get('DIAG_POINTS', 'all')
PROMOTES = [int(x) for x in os.environ.get('DIAG_PROMOTES', '1,0').split(',')]


def main() -> None:
    dev = torch.device("cuda")
    l2 = torch.cuda.get_device_properties(dev).L2_cache_size
    points = [
        (1, 28672, 4096, dict(BLOCK_M=16, BLOCK_N=128, BLOCK_K=128, num_warps=4, num_stages=4)),
        (256, 8192, 8192, dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=128, num_warps=8, num_stages=4)),
        (4096, 4096, 4096, dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=128, num_warps=8, num_stages=3)),
        (4096, 4096, 4096, dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=128, num_warps=8, num_stages=3)),
        (4096, 4096, 4096, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, num_warps=8, num_stages=4)),
    ]
    if POINTS == "large":
        points = [p for p in points if p[0] >= 256] + [
            (4096, 4096, 4096, dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=128, num_warps=8, num_stages=4)),
            (4096, 4096, 4096, dict(BLOCK_M=256, BLOCK_N=256, BLOCK_K=64, num_warps=8, num_stages=3)),
        ]
    for M, N, K, cfg in points:
        sets = _make_sets(M, N, K, torch.float8_e4m3fn, False, dev, l2, False)
        n = len(sets)
        base = time_graph(lambda i: torch._scaled_mm(sets[i].A, sets[i].W.t(), sets[i].scale_a, sets[i].scale_b,
                                                     out_dtype=torch.bfloat16), n, 1.0, 7)
        ref = (sets[0].A.float() @ sets[0].W.float().t())
        print(f"M={M} N={N} K={K} {cfg}: _scaled_mm {base:.1f} us", flush=True)
        meta = {k: v for k, v in cfg.items() if k.startswith("BLOCK")}
        for layout, swap in VARIANTS:
            for promote in PROMOTES:
                outs = [torch.empty(M, N, dtype=torch.bfloat16, device=dev) for _ in range(n)]
                grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)

                def call(i):
                    w = sets[i].B.t() if layout != 2 else sets[i].W
                    return _diag_kernel[grid](sets[i].A, w, outs[i], M, N, K, LAYOUT=layout, PROMOTE=promote, SWAP=swap,
                                              GROUP_M=8, **cfg)

                try:
                    compiled = call(0)
                    err = ((outs[0].float() - ref).norm() / ref.norm()).item()
                    us = time_graph(call, n, 1.0, 7)
                    print(f"   layout={layout} swap={int(swap)} promote={int(promote)}: {us:8.1f} us  x{base / us:4.2f} "
                          f"relerr={err:.2e}  {ptx_facts(compiled) }", flush=True)
                except Exception as e:
                    print(f"   layout={layout} swap={int(swap)} promote={int(promote)}: FAIL {type(e).__name__}: {str(e)[:200]}", flush=True)
        # The production launcher on the same point.
        full = dict(cfg, SPLIT_K=1, GROUP_M=8)
        us = time_graph(lambda i: T.launch(full, sets[i].A, sets[i].B, sets[i].scale_a, sets[i].scale_b, None,
                                           torch.bfloat16), n, 1.0, 7)
        print(f"   production launch: {us:.1f} us", flush=True)
        del sets
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
