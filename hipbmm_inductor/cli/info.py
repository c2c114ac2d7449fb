"""``python -m hipbmm_inductor info``: the platform, the chosen backend, and why each backend is or is
not usable (:func:`hipbmm_inductor.status`)."""

from __future__ import annotations

import argparse
import json

from hipbmm_inductor.ops.registry import set_backend
from hipbmm_inductor.status import status

from .args import backend_arg, device_arg

__all__ = ["register"]


def _info(args: argparse.Namespace) -> int:
    if args.backend:
        set_backend(args.backend)
    report = status(args.device)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.format())
    return 0 if report.chosen_backend and not report.config_errors else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="platform, chosen backend, and why each backend is or is not usable")
    p.add_argument("--device", type=device_arg, default=None,
                   help="device to report on (default: cuda if present, else cpu)")
    p.add_argument("--backend", type=backend_arg, default=None, help="report as if HIPBMM_BACKEND were this")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_info)
