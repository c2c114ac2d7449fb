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

__all__ = ["main", "build_parser", "backend_arg", "device_arg", "positive_int"]

# module -> it defines register(subparsers) adding one or more commands.
_COMMAND_MODULES = (
    "hipbmm_inductor.cli",
    "hipbmm_inductor.demo",
    "hipbmm_inductor.tuning.cli",
    "hipbmm_inductor.bench",
)


# -- argument types shared by the commands: each error names the rule (argparse adds the flag) --


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def backend_arg(text: str) -> str:
    """A registered backend name or ``auto`` (case-insensitive)."""
    from .ops import registry

    name = text.strip().lower()
    if name != "auto" and name not in registry.backend_names():
        raise argparse.ArgumentTypeError(
            f"unknown backend {text!r}; expected one of auto, {', '.join(registry.backend_names())}")
    return name


def device_arg(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, where this PyTorch build and machine can run it."""
    import torch

    try:
        device = torch.device(text.strip())
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; expected cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not (torch.version.cuda or torch.version.hip):
            raise argparse.ArgumentTypeError(
                f"{text!r}: this PyTorch ({torch.__version__}) is a CPU-only build, without CUDA or ROCm; "
                f"use --device cpu or install a GPU build")
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: no GPU is visible to this PyTorch "
                                             f"(torch.cuda.is_available() is False)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {torch.cuda.device_count()} GPU(s) (cuda:0 to "
                f"cuda:{torch.cuda.device_count() - 1})")
    return str(device)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (``error: argument --x: <rule>``), exit status 2.

    Sub-command parsers are made by ``add_subparsers`` with the parent's class, so every command
    reports this way.
    """

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _info(args: argparse.Namespace) -> int:
    from . import set_backend, status

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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m hipbmm_inductor", description=__doc__.splitlines()[0])
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
    except (ValueError, RuntimeError, OSError) as e:
        # Bad input, unusable backends and files that cannot be written end with one line, not a
        # traceback (OSError: e.g. a folder that does not exist, a full disk).
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
