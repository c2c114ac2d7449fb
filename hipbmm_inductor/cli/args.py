"""Argument types shared by the commands. Each error names the rule; argparse adds the flag."""

from __future__ import annotations

import argparse
import os
from typing import Optional

import torch

from hipbmm_inductor.ops import registry
from hipbmm_inductor.tuning.key import parse_dtype

__all__ = ["positive_int", "count", "backend_arg", "device_arg", "choice_type", "fp8_type", "bias_type",
           "recorded_dtype", "device_or_default", "plot_path"]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value



def count(text: str) -> int:
    """A whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value



def backend_arg(text: str) -> str:
    """A registered backend name or ``auto`` (case-insensitive)."""
    name = text.strip().lower()
    if name != "auto" and name not in registry.backend_names():
        raise argparse.ArgumentTypeError(
            f"unknown backend {text!r}; expected one of auto, {', '.join(registry.backend_names())}")
    return name


def device_arg(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, where this PyTorch build and machine can run it."""
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


def choice_type(what: str, allowed: dict[str, Optional[torch.dtype]]):
    """An argparse type taking exactly ``allowed``'s spellings (case-insensitive)."""

    def parse(text: str) -> Optional[torch.dtype]:
        key = text.strip().lower()
        if key not in allowed:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; expected one of {', '.join(allowed)}")
        return allowed[key]

    parse.__name__ = what  # argparse names the type in some messages
    return parse


# The dtypes the op takes (ops.validate: fp8 flavours and bias dtypes), with the short spellings.
fp8_type = choice_type("fp8 flavour", {"float8_e4m3fn": torch.float8_e4m3fn, "e4m3fn": torch.float8_e4m3fn,
                                         "float8_e4m3fnuz": torch.float8_e4m3fnuz, "e4m3fnuz": torch.float8_e4m3fnuz})
bias_type = choice_type("bias dtype", {"none": None, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                                         "float32": torch.float32, "fp32": torch.float32})


_DTYPE_ALIASES = {"bf16": "bfloat16", "fp32": "float32", "e4m3fn": "float8_e4m3fn", "e4m3fnuz": "float8_e4m3fnuz"}


def recorded_dtype(name: str) -> Optional[torch.dtype]:
    """A dtype name from a recorded-shapes file (``ValueError`` for one this torch lacks)."""
    return parse_dtype(_DTYPE_ALIASES.get(name, name))


def device_or_default(name: Optional[str]) -> torch.device:
    """``--device`` as given, else the current GPU, else the CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def plot_path(out: str, plot: Optional[str]) -> str:
    """``--plot`` as given, or else beside ``--out`` (``x.json`` -> ``x.png``); '' for none. Refuses
    a plot that would overwrite the JSON (``--out r.png``)."""
    path = plot if plot is not None else (os.path.splitext(out)[0] + ".png" if out else "")
    if path and out and os.path.abspath(path) == os.path.abspath(out):
        raise ValueError(f"--plot and --out name the same file ({out}): the plot would overwrite the JSON; "
                         f"name another --plot")
    return path

