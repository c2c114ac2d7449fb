"""``python -m hipbmm_inductor demo``: compile an FP8 Llama MLP and show what the lowering did
(:func:`hipbmm_inductor.demo.run_demo`)."""

from __future__ import annotations

import argparse

from hipbmm_inductor.demo import run_demo

from .args import backend_arg, device_arg, positive_int

__all__ = ["register"]


def _cmd(args: argparse.Namespace) -> int:
    result = run_demo(tokens=args.tokens, hidden=args.hidden, intermediate=args.intermediate,
                      device=args.device, backend=args.backend, iters=args.iters)
    # Skipped candidates are a legitimate outcome (printed with their reasons); a rewrite whose
    # weight did not fold into a constant is a bug.
    return 1 if result["rewritten"] and not result["folded"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="compile an FP8 Llama MLP with freezing and show what the lowering did")
    p.add_argument("--tokens", type=positive_int, default=None,
                   help="M, the number of tokens (default 64 on cpu, 16 on gpu)")
    p.add_argument("--hidden", type=positive_int, default=None, help="hidden size (default 256 on cpu, 4096 on gpu)")
    p.add_argument("--intermediate", type=positive_int, default=None,
                   help="MLP intermediate size (default 512 on cpu, 14336 on gpu)")
    p.add_argument("--device", type=device_arg, default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument("--backend", type=backend_arg, default=None,
                   help="hipb_mm_fp8 backend (default: HIPBMM_BACKEND if set, else reference on cpu, auto on a GPU)")
    p.add_argument("--iters", type=positive_int, default=10, help="timed iterations per path (default 10)")
    p.set_defaults(func=_cmd)
