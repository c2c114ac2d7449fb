"""Host cost of one eager call at decode size: hipb_mm_fp8 against torch._scaled_mm.

For each suite weight (N, K) at M = 1, the host time one call takes to issue, measured as the
wall time of ``--calls`` back-to-back calls with no synchronisation inside the loop (the GPU
queue absorbs the kernels, so the loop time is the host's), median over ``--repeats`` loops,
fresh random data. Variants, all in the same run and timed in turns (one loop of each per
repeat, so that the host's drift during the run reaches them alike):

- ``scaled_mm``: ``torch._scaled_mm`` rowwise, bf16 out (cuBLASLt), on the plain weight;
- ``ours``: ``hipbmm_inductor.hipb_mm_fp8`` (the public op: dispatch, validation, backend
  lookup, launch plan, binder-free launch);
- ``ours_binder``: the same kernel and config through Triton's own ``kernel[grid](...)``
  launch, called directly (no op dispatch, check or lookup around it);
- ``launch_floor``: the plan's relaunch alone (no op, no validation, no lookup).

Also, compiled without CUDA graphs (``torch.compile`` default mode, freezing), one linear with
per-token dynamic quantisation: ``compiled_ours`` (rewritten) and ``compiled_scaled_mm``
(Inductor's own lowering, the pass off).

    python benchmarks/host_cost.py --out benchmarks/results/h200/host_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

import hipbmm_inductor as hi
from hipbmm_inductor import timing
from hipbmm_inductor.bench.inputs import random_inputs


def host_us(fn, calls: int, repeats: int) -> float:
    return timing.host_us(fn, calls, repeats, sync=True)


def _inputs(M: int, N: int, K: int, seed: int):
    torch.manual_seed(seed)
    s = random_inputs(M, N, K, torch.float8_e4m3fn, False, "cuda")
    return s.A, s.W, s.B, s.scale_a, s.scale_b


class _Linear(torch.nn.Module):
    def __init__(self, W: torch.Tensor, sb: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(W, requires_grad=False)
        self.scale = torch.nn.Parameter(sb, requires_grad=False)

    def forward(self, x):
        s = x.abs().amax(-1, keepdim=True).float().clamp(min=1e-12) / 448.0
        xq = (x.float() / s).clamp(-448, 448).to(torch.float8_e4m3fn)
        return torch._scaled_mm(xq, self.weight.t(), scale_a=s, scale_b=self.scale, out_dtype=torch.bfloat16)


def _compiled(W, sb, rewrite: bool):
    torch._dynamo.reset()
    (hi.enable if rewrite else hi.disable)()
    hi.lowering.reset_counters()
    f = torch.compile(_Linear(W, sb))
    return f


def _breakdown(plan, A, B, sa, sb, calls: int, repeats: int) -> dict:
    """Where one relaunch's host time goes: each step of HopperPlan.__call__ timed alone."""
    from hipbmm_inductor import envs
    from hipbmm_inductor.ops import registry, validate
    from hipbmm_inductor.ops.triton_launch import current_stream

    be = registry.get_backend("triton")

    N = B.shape[1]
    fast = plan.fast
    out = plan(A, B, sa, sb, None)  # kept alive: the launches below write into it
    a, w, c = A.data_ptr(), B.data_ptr(), out.data_ptr()
    args = (*plan._a[a], *plan._w[w], sa.data_ptr(), sb.data_ptr(), sb.data_ptr(), *plan._c[c], *plan._tail)
    idx = A.device.index or 0
    steps = {
        "torch.empty": lambda: torch.empty(1, N, dtype=torch.bfloat16, device=A.device),
        "5 x data_ptr": lambda: (A.data_ptr(), B.data_ptr(), sa.data_ptr(), sb.data_ptr(), out.data_ptr()),
        "current_stream": lambda: current_stream(idx),
        "hooks_idle": fast.hooks_idle,
        "descriptor lookups": lambda: (plan._a.get(a), plan._w.get(w), plan._c.get(c)),
        "C launcher only": lambda: fast(plan.prepared.grid, current_stream(idx), args),
        "whole relaunch": lambda: plan(A, B, sa, sb, None),
        "envs.raw(accumulation)": lambda: envs.raw("HIPBMM_TRITON_ACCUMULATION"),
        "torch.cuda.current_device": torch.cuda.current_device,
        "backend.run": lambda: be.run(A, B, sa, sb, None, torch.bfloat16),
        "validate.is_valid_fast": lambda: validate.is_valid_fast(A, B, sa, sb, None, torch.bfloat16),
        "registry.backend_for": lambda: registry.backend_for(A.device),
        "op": lambda: hi.hipb_mm_fp8(A, B, sa, sb),
    }
    return {k: round(host_us(f, calls, repeats), 3) for k, f in steps.items()}


def measure(N: int, K: int, calls: int, repeats: int, compiled: bool, breakdown: bool = False) -> dict:
    from hipbmm_inductor.ops.triton_backend import TritonBackend
    from hipbmm_inductor.ops import registry, triton_fp8_gemm as T

    A, W, B, sa, sb = _inputs(1, N, K, seed=N + K)
    Wt = W.t()
    rec = {"N": N, "K": K, "M": 1}
    be: TritonBackend = registry.get_backend("triton")
    hi.hipb_mm_fp8(A, B, sa, sb)  # builds the launch plan
    config, fast = be.config_for(A, B, sa, sb, None, torch.bfloat16)
    plans = [p for k, p in be._plans.items() if k[2] == N and k[3] == K and k[4] == 1]
    plan = plans[0] if plans else None
    # Timed in turns, loop by loop, so that the host's drift during the run reaches every variant.
    fns = {
        "scaled_mm_us": lambda: torch._scaled_mm(A, Wt, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16),
        "ours_us": lambda: hi.hipb_mm_fp8(A, B, sa, sb),
        "ours_binder_us": lambda: T.launch(config, A, B, sa, sb, None, torch.bfloat16, fast_accum=fast),
    }
    if plan is not None and plan.fast is not None:
        fns["launch_floor_us"] = lambda: plan(A, B, sa, sb, None)
    rec.update(timing.host_us_turns(fns, calls, repeats, sync=True))
    # The breakdown times HopperPlan.__call__'s steps: on the first shape the Gluon kernel serves.
    if plan is not None and plan.fast is not None and breakdown and plan.kernel == "gluon-sm90":
        rec["breakdown_us"] = _breakdown(plan, A, B, sa, sb, calls, repeats)
    rec["kernel"] = None if plan is None else plan.kernel
    rec["binder_free"] = plan is not None and plan.fast is not None
    if compiled:
        x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):
            for rewrite, name in ((True, "compiled_ours_us"), (False, "compiled_scaled_mm_us")):
                f = _compiled(W, sb, rewrite)
                f(x)
                if rewrite:
                    rec["compiled_rewritten"] = hi.lowering.counters().rewritten
                rec[name] = host_us(lambda: f(x), calls, repeats)
                if rewrite:
                    rec["compiled_launch_stats"] = be.launch_stats()
        hi.lowering.enable()
        hi.envs.set_override("HIPBMM_LOWERING", None)
    rec["ratio"] = round(rec["ours_us"] / rec["scaled_mm_us"], 4)
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="llama3-8b;llama3-70b", help="suite names or 'N,K;N,K'")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--no-compiled", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--out", default="benchmarks/results/h200/host_cost.json")
    args = p.parse_args(argv)
    if args.calls < 1 or args.repeats < 1:
        p.error("--calls and --repeats must be >= 1")
    from hipbmm_inductor.bench.suites import parse_shapes

    try:
        shapes = parse_shapes(args.shapes)
    except ValueError as e:
        p.error(str(e))
    if not torch.cuda.is_available():
        print("host_cost: needs a GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    hi.set_backend("triton")
    records = []
    for N, K in shapes:
        rec = measure(N, K, args.calls, args.repeats, not args.no_compiled,
                      breakdown=not any("breakdown_us" in r for r in records))
        print(json.dumps(rec), flush=True)
        records.append(rec)
    import triton

    data = {"what": "host time per eager call at M = 1 (median of loops of back-to-back calls)",
            "device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "calls": args.calls, "repeats": args.repeats, "records": records}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(data, f, indent=1)
        _plot(data, os.path.splitext(args.out)[0] + ".png")
    worst = max(r["ratio"] for r in records)
    print(f"ours / scaled_mm host time: worst x{worst:.3f}")
    return 0


def _plot(data: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = data["records"]
    names = [f"{r['N']}x{r['K']}" for r in recs]
    keys = [k for k in ("scaled_mm_us", "ours_us", "ours_binder_us", "launch_floor_us", "compiled_scaled_mm_us",
                        "compiled_ours_us") if all(k in r for r in recs)]
    fig, ax = plt.subplots(figsize=(11, 5))
    w = 0.8 / len(keys)
    for i, k in enumerate(keys):
        ax.bar([j + i * w for j in range(len(recs))], [r[k] for r in recs], w, label=k.removesuffix("_us"))
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(recs))], names, rotation=20)
    ax.set(ylabel="host us per call (M = 1)", title=f"{data['device']}: host cost per call, hipb_mm_fp8 vs _scaled_mm")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
