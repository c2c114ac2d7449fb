"""The op's own host overhead above its backend's launch, layer by layer.

A backend that does no work (it returns a preallocated tensor) is registered and selected, so
what is timed is only what ``hipb_mm_fp8`` adds around a backend: the dispatcher's call into the
Python kernel, the argument check, the backend lookup. Each layer is timed alone too, median of
``--repeats`` loops of ``--calls`` calls, on the machine it runs on (the CPU by default; tensors
on ``--device``):

- ``backend_run``: the null backend's ``run`` (the floor: one Python call);
- ``check``: :func:`validate.is_valid_fast` (complete: everything ``check_inputs`` rejects it rejects);
- ``backend_for``: the memoised backend lookup;
- ``op``: ``hipbmm_inductor.hipb_mm_fp8`` (the public entry point, defaults left out);
- ``op_all_args``: ``torch.ops.hipbmm.hipb_mm_fp8.default`` with all six arguments, as a
  compiled graph may call it;
- ``overhead``: ``op - backend_run``, the figure the op is held to (<= 5 us).

    python benchmarks/op_overhead.py --out op_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

import hipbmm_inductor as hi
from hipbmm_inductor import timing
from hipbmm_inductor.ops import registry, validate


class NullBackend:
    """Does no work: returns the tensor it was given, so only the op's own layers are timed."""

    name = "null-bench"

    def __init__(self, out: torch.Tensor):
        self.out = out

    def availability(self, device):
        return registry.Availability(True, "benchmark stand-in")

    def is_fast(self, device):
        return False

    def run(self, A, B, scale_a, scale_b, bias, out_dtype):
        return self.out


def per_call_us(fn, calls: int, repeats: int) -> float:
    return timing.host_us(fn, calls, repeats, warmup=min(calls, 1000))


def measure(device: str = "cpu", calls: int = 20000, repeats: int = 9, M: int = 1, N: int = 4096,
            K: int = 4096) -> dict:
    dev = torch.device(device)
    A = torch.zeros(M, K, device=dev).to(torch.float8_e4m3fn)
    B = hi.prepack_weight(torch.zeros(N, K, device=dev).to(torch.float8_e4m3fn))
    sa, sb = torch.ones(M, 1, device=dev), torch.ones(1, N, device=dev)
    null = NullBackend(torch.empty(M, N, dtype=torch.bfloat16, device=dev))
    registry.register_backend(null)
    hi.set_backend(null.name)
    op = torch.ops.hipbmm.hipb_mm_fp8.default
    bf16 = torch.bfloat16
    try:
        t = {
            "backend_run": per_call_us(lambda: null.run(A, B, sa, sb, None, bf16), calls, repeats),
            "check": per_call_us(lambda: validate.is_valid_fast(A, B, sa, sb, None, bf16), calls, repeats),
            "backend_for": per_call_us(lambda: registry.backend_for(dev), calls, repeats),
            "op": per_call_us(lambda: hi.hipb_mm_fp8(A, B, sa, sb), calls, repeats),
            "op_all_args": per_call_us(lambda: op(A, B, sa, sb, None, bf16), calls, repeats),
        }
    finally:
        hi.set_backend(None)
        registry._backends.pop(null.name, None)  # leave the registry as it was
        registry.reset_selection()
    t = {k: round(v, 3) for k, v in t.items()}
    t["overhead"] = round(t["op"] - t["backend_run"], 3)
    t["overhead_all_args"] = round(t["op_all_args"] - t["backend_run"], 3)
    return {"M": M, "N": N, "K": K, "device": str(dev), "us": t}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", default="", help="JSON output path ('' prints only)")
    args = p.parse_args(argv)
    if args.calls < 1 or args.repeats < 1:
        p.error("--calls and --repeats must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: this PyTorch has no CUDA device")
    rec = measure(args.device, args.calls, args.repeats)
    data = {"what": "hipb_mm_fp8 host overhead above a no-op backend (median per-call us)",
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(), **rec}
    print(json.dumps(data, indent=1))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(data, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
