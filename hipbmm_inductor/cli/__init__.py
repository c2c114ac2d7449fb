"""``python -m hipbmm_inductor`` / ``hipbmm-inductor``: the command line.

One module per command here (``info``, ``demo``, ``tune``, ``cache``, ``bench``), each with a
``register(subparsers)``; this module assembles them. Shared argument types: :mod:`.args`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]

# Imported when the parser is built, not with the package: `import hipbmm_inductor` must not pull
# in the benchmarks' and the demo's dependencies.
_COMMANDS = ("info", "demo", "tune", "cache", "bench")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (``error: argument --x: <rule>``), exit status 2.

    Sub-command parsers are made by ``add_subparsers`` with the parent's class, so every command
    reports this way.
    """

    def __init__(self, *args, **kwargs):
        # No abbreviated options: `tune --m 3` would silently mean --max-candidates 3.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")



def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m hipbmm_inductor", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging from hipbmm_inductor")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
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
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, RuntimeError, OSError) as e:
        # Bad input, unusable backends and files that cannot be written end with one line, not a
        # traceback (OSError: e.g. a folder that does not exist, a full disk).
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
