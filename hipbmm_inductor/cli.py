"""``python -m hipbmm_inductor`` / ``hipbmm-inductor``: the command line.

Each command lives beside the code it drives and contributes a ``register(subparsers)`` function;
this module only assembles them. Commands import their heavy dependencies when they run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]

# module -> it defines register(subparsers) adding one or more commands.
_COMMAND_MODULES = (
    "hipbmm_inductor.cli",
    "hipbmm_inductor.demo",
    "hipbmm_inductor.tuning.cli",
    "hipbmm_inductor.bench",
)


def _info(args: argparse.Namespace) -> int:
    from . import set_backend, status

    if args.backend:
        set_backend(args.backend)
    report = status(args.device)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.format())
    return 0 if report.chosen_backend else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="platform, chosen backend, and why each backend is or is not usable")
    p.add_argument("--device", default=None, help="device to report on (default: cuda if present, else cpu)")
    p.add_argument("--backend", default=None, help="report as if HIPBMM_BACKEND were this")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hipbmm_inductor", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging from hipbmm_inductor")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    if args.verbose:
        logging.getLogger("hipbmm_inductor").setLevel(logging.DEBUG)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # `... | head`: the reader left; exit quietly instead of a traceback on stderr.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, RuntimeError) as e:
        # Bad input and unusable backends end with one line, not a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
