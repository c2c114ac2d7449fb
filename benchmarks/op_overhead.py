"""torch.library.triton_op or an opaque custom_op? Host cost per call, eager and compiled.

The question: hipb_mm_fp8 is one opaque ``custom_op`` that dispatches to a backend at run time.
``torch.library.triton_op`` + ``wrap_triton`` would let Inductor see (and launch) the Triton kernel
itself. This measures what each costs per call at M = 1 (decode), where host time, not GPU
time, bounds a plain (non-graph) launch:

- eager: the public op; an equivalent ``triton_op``; the bare launcher; ``torch._scaled_mm``;
- compiled (``torch.compile``, no CUDA graphs): the same calls inside a compiled function.

Each number is the best of 5 runs of 300 back-to-back calls, host wall-clock per call, with the
GPU work (~10 us) smaller than the host time, so it is the host cost.

    python benchmarks/op_overhead.py
"""

from __future__ import annotations

import json
import sys
import time

import torch
import triton
from torch.library import triton_op, wrap_triton

import hipbmm_inductor as hi
from hipbmm_inductor.ops import triton_configs as C
from hipbmm_inductor.ops import triton_fp8_gemm as T


@triton_op("hipbmm_bench::fp8_triton_op", mutates_args=())
def fp8_triton_op(A: torch.Tensor, B: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
                  bias: torch.Tensor) -> torch.Tensor:
    # Same kernel and heuristic as the backend; the config is fixed at trace time under
    # torch.compile (block sizes are constexprs), so one graph gets one config for every M.
    M, K = A.shape
    N = B.shape[1]
    cfg = dict(C.heuristic_config(M, N, K), SPLIT_K=1)
    out = torch.empty((M, N), dtype=torch.bfloat16, device=A.device)
    grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]), 1)
    wrap_triton(T._fp8_gemm_preshuffled_kernel)[grid](
        A, B.t(), scale_a, scale_b, bias, out, M, N, K,
        HAS_BIAS=True, UPCAST=False, FNUZ=False, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        BLOCK_K=cfg["BLOCK_K"], SPLIT_K=1, GROUP_M=8, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out


def host_us(f, calls=300) -> float:
    for _ in range(20):
        f()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(calls):
            f()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) / calls * 1e6)
    return best


def main() -> None:
    hi.set_backend("triton")
    dev = "cuda"
    M, N, K = 1, 4096, 4096
    W = (torch.randn(N, K, device=dev) * 2).to(torch.float8_e4m3fn)
    B = hi.prepack_weight(W)
    A = (torch.randn(M, K, device=dev) * 2).to(torch.float8_e4m3fn)
    sa = torch.rand(M, 1, device=dev) + 0.5
    sb = torch.rand(1, N, device=dev) + 0.5
    bias = torch.randn(N, device=dev).to(torch.bfloat16)
    cfg = C.heuristic_config(M, N, K)

    ours = lambda A: torch.ops.hipbmm.hipb_mm_fp8(A, B, sa, sb, bias, torch.bfloat16)  # noqa: E731
    top = lambda A: fp8_triton_op(A, B, sa, sb, bias)  # noqa: E731
    base = lambda A: torch._scaled_mm(A, W.t(), sa, sb, bias=bias, out_dtype=torch.bfloat16)  # noqa: E731
    ref = ours(A).float()
    assert ((top(A).float() - ref).abs().max() <= 2**-6 * ref.abs().max()), "triton_op disagrees"

    rows = {
        "eager: hipb_mm_fp8 (opaque custom_op -> triton backend)": lambda: ours(A),
        "eager: triton_op (same kernel)": lambda: top(A),
        "eager: launcher only (no op, no validation, no tuning lookup)": lambda: T.launch(cfg, A, B, sa, sb, bias, torch.bfloat16),
        "eager: torch._scaled_mm": lambda: base(A),
    }
    for name, fn in [("hipb_mm_fp8 (opaque)", ours), ("triton_op", top), ("torch._scaled_mm", base)]:
        torch._dynamo.reset()
        cf = torch.compile(lambda A, fn=fn: fn(A) * 2, dynamic=False)
        cf(A)
        rows[f"compiled: {name} (+ one fused mul)"] = lambda cf=cf: cf(A)
    result = {}
    for name, f in rows.items():
        result[name] = host_us(f)
        print(f"{name:70s} {result[name]:7.1f} us/call", flush=True)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as fh:
            json.dump({"device": torch.cuda.get_device_name(), "M": M, "N": N, "K": K,
                       "host_us_per_call": result}, fh, indent=1)


if __name__ == "__main__":
    main()
