"""What does the Python around ``aiter.hipb_mm`` cost per call? The aiter backend's host overhead.

Three variants, timed in turns on the CPU against one zero-work stand-in for ``aiter``
(``tests/support/aiter_standin.py`` with ``zero_work_out``: its ``hipb_mm`` returns a preallocated tensor,
with no checks, no recording and no math), so every difference is host time spent in our code:

- ``hipb_mm_direct``: the stand-in's ``hipb_mm`` called exactly as the backend calls it;
- ``backend_run``: ``AiterBackend.run`` (a plan lookup, then that call);
- ``op``: ``torch.ops.hipbmm.hipb_mm_fp8`` with the aiter backend selected (dispatcher,
  argument check, backend selection, then ``backend_run``).

Target: ``backend_run - hipb_mm_direct`` <= ~3 us. Each number is the median over ``--repeats``
runs of ``--calls`` back-to-back calls (host wall clock per call); the fastest run and the
machine's load average are recorded beside it, since other work on a shared CPU slows every
variant.

Simulation, undone before the script returns: the stand-in is ``sys.modules["aiter"]``, CPU
tensors stand in for the GPU's (the backend's availability is forced on, hipBLASLt's version
is reported), and the tuner runs in ``cache`` mode on an empty temporary folder (an untuned
shape: the plan holds hipBLASLt's heuristic, -1).

    python benchmarks/aiter_overhead.py [--out benchmarks/results/cpu/aiter_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
# The stand-in lives with the tests (it is a test double, not shipped): import it from the checkout.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import hipbmm_inductor as hi  # noqa: E402
from hipbmm_inductor import tuning  # noqa: E402
from hipbmm_inductor.ops import aiter_backend, registry  # noqa: E402
from hipbmm_inductor.ops.registry import Availability  # noqa: E402
from hipbmm_inductor.tuning.key import library_versions  # noqa: E402
from tests.support.aiter_standin import AiterStandIn  # noqa: E402

VARIANTS = ("hipb_mm_direct", "backend_run", "op")
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "cpu" / "aiter_overhead.json"
TARGET_US = 3.0  # backend_run - hipb_mm_direct


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file (default: %(default)s)")
    p.add_argument("--calls", type=_positive, default=20_000, help="back-to-back calls per timed run")
    p.add_argument("--repeats", type=_positive, default=15, help="timed runs per variant (the median is kept)")
    p.add_argument("--M", type=_positive, default=1, help="tokens (decode: 1)")
    p.add_argument("--N", type=_positive, default=4096, help="output features (a multiple of 16)")
    p.add_argument("--K", type=_positive, default=4096, help="input features (a multiple of 32)")
    args = p.parse_args(argv)
    if args.N % 16 or args.K % 32:
        p.error(f"--N must be a multiple of 16 and --K of 32 (the preshuffle tile), got N={args.N}, K={args.K}")
    return args


def _inputs(M: int, N: int, K: int, fp8: torch.dtype):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(M, K, generator=g).to(fp8)
    B = hi.prepack_weight(torch.randn(N, K, generator=g).to(fp8))
    scale_a = torch.rand(M, 1, generator=g) + 0.5
    scale_b = torch.rand(1, N, generator=g) + 0.5
    return A, B, scale_a, scale_b, None, torch.bfloat16


def time_per_call_us(fns: dict[str, Callable[[], object]], calls: int, repeats: int) -> dict[str, list[float]]:
    """Host microseconds per call of each function, one sample per repeat, the variants timed in turns."""
    for fn in fns.values():  # warm-up: plans built, caches filled, branch predictors trained
        for _ in range(min(calls, 1000)):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter_ns() - t0) / calls / 1e3)
    return samples


def _load() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return None


def _device() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:  # Linux: the model name; platform.processor() is often blank
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"CPU {cpu} ({os.cpu_count()} logical cores), {platform.system()}"


def measure(args: argparse.Namespace) -> dict:
    fp8 = torch.float8_e4m3fnuz  # gfx942's flavour; the host path does not depend on it
    A, B, scale_a, scale_b, bias, out_dtype = _inputs(args.M, args.N, args.K, fp8)
    preallocated = torch.empty(args.M, args.N, dtype=out_dtype)
    standin = AiterStandIn(arch="gfx942", zero_work_out=preallocated)
    backend = registry.get_backend("aiter")

    with ExitStack() as undo, tempfile.TemporaryDirectory() as cache:
        saved_aiter = sys.modules.get("aiter")
        undo.callback(lambda: sys.modules.__setitem__("aiter", saved_aiter) if saved_aiter is not None
                      else sys.modules.pop("aiter", None))
        sys.modules["aiter"] = standin
        for obj, name, value in (
            (aiter_backend, "_hipblaslt_version", lambda: "standin"),
            (backend, "availability", lambda device: Availability(True, "simulated MI300 (CPU tensors)")),
        ):
            saved = obj.__dict__.get(name, None)
            undo.callback(lambda obj=obj, name=name, saved=saved: setattr(obj, name, saved) if saved is not None
                          else delattr(obj, name))
            setattr(obj, name, value)
        undo.callback(aiter_backend.invalidate_plans)
        undo.callback(hi.set_backend, None)
        undo.callback(tuning.set_mode, None)
        undo.callback(tuning.set_cache_dir, None)
        tuning.set_cache_dir(cache)
        tuning.set_mode("cache")
        aiter_backend.invalidate_plans()
        hi.set_backend("aiter")

        hipb_mm = standin.hipb_mm
        op = torch.ops.hipbmm.hipb_mm_fp8
        run = backend.run
        fns = {
            "hipb_mm_direct": lambda: hipb_mm(A, B, -1, bias=bias, out_dtype=out_dtype, scaleA=scale_a,
                                              scaleB=scale_b, scaleOut=None, bpreshuffle=True),
            "backend_run": lambda: run(A, B, scale_a, scale_b, bias, out_dtype),
            "op": lambda: op(A, B, scale_a, scale_b, bias, out_dtype),
        }
        # Each variant must reach the stand-in: a fallback or an error would time something else.
        for name, fn in fns.items():
            if fn() is not preallocated:
                raise RuntimeError(f"{name} did not return the stand-in's output: it did not reach aiter.hipb_mm")
        load_before = _load()
        samples = time_per_call_us(fns, args.calls, args.repeats)
        load_after = _load()
    us = {name: statistics.median(s) for name, s in samples.items()}

    versions = dict(library_versions())
    versions["python"] = platform.python_version()
    return {
        "benchmark": "aiter_overhead",
        "device": _device(),
        "versions": versions,
        "shape": {"M": args.M, "N": args.N, "K": args.K, "fp8": str(fp8).removeprefix("torch."), "bias": None},
        "calls": args.calls,
        "repeats": args.repeats,
        # Other work on the machine slows every variant; the 1-minute load average says how busy it was.
        "load_average_1min": {"before": load_before, "after": load_after},
        "records": [{"variant": name, "us": round(us[name], 4), "min_us": round(min(samples[name]), 4)}
                    for name in VARIANTS],
        "overhead_us": {
            "backend_run - hipb_mm_direct": round(us["backend_run"] - us["hipb_mm_direct"], 4),
            "op - backend_run": round(us["op"] - us["backend_run"], 4),
        },
        "target_us": {"backend_run - hipb_mm_direct": TARGET_US},
    }


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    result = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for r in result["records"]:
        print(f"{r['variant']:>16}: {r['us']:8.3f} us/call")
    for what, us in result["overhead_us"].items():
        print(f"{what:>32}: {us:8.3f} us")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
