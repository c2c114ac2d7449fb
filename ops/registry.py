"""Backends behind ``hipb_mm_fp8``: one registry, one selector.

A backend is a small object (see :class:`Backend`) living in its own module. The op calls
:func:`backend_for` on every real call; the answer is memoised per (setting, device) so that the
hot path is a dict lookup. ``HIPBMM_BACKEND`` (or :func:`set_backend`) picks one by name, and a
named backend that cannot run raises :class:`BackendUnavailableError` with the reason; ``auto``
walks the device's preference list, takes the first usable backend and logs, once, why it
passed over the others.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from dataclasses import dataclass
from typing import Optional, Protocol

import torch

from hipbmm_inductor import envs, hardware

from .aiter_gating import VLLM_FLAGS
from .errors import BackendUnavailableError

__all__ = [
    "Availability",
    "Backend",
    "BackendUnavailableError",
    "register_backend",
    "get_backend",
    "backend_names",
    "backend_for",
    "set_backend",
    "configured_backend",
    "auto_order",
    "reset_selection",
]

log = logging.getLogger("hipbmm_inductor")


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


class Backend(Protocol):
    name: str
    # True when run() also takes ``out=`` (a contiguous [M, N] bf16 tensor) and writes the result
    # there: compiled graphs then call it into Inductor's own buffer (lowering/extern_call.py).
    writes_out: bool = False

    def availability(self, device: torch.device) -> Availability:
        """Whether this backend can run on ``device`` (import, platform, hardware), and why not."""

    def is_fast(self, device: torch.device) -> bool:
        """Whether routing linears here is known (measured) to beat the vendor path on ``device``.

        Decides whether the compiler pass rewrites by default, under ``HIPBMM_BACKEND=auto``.
        """

    def run(self, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        """Compute the op on validated inputs; return a fresh contiguous ``[M, N]`` tensor (or,
        for a backend that ``writes_out``, ``out`` when one is passed)."""


# Built-in backends are imported on first use so that `import hipbmm_inductor` never imports
# triton or aiter. Third-party backends call register_backend() directly.
_BUILTIN_MODULES = {
    "reference": "hipbmm_inductor.ops.reference",
    "triton": "hipbmm_inductor.ops.triton_backend",
    "aiter": "hipbmm_inductor.ops.aiter_backend",
}

_lock = threading.Lock()
_backends: dict[str, Backend] = {}
_import_errors: dict[str, str] = {}
_selected: dict[tuple[str, torch.device], Backend] = {}
_explained: set[tuple[str, torch.device]] = set()


def register_backend(backend: Backend) -> Backend:
    """Add (or replace) a backend under ``backend.name``."""
    for attr in ("name", "availability", "is_fast", "run"):
        if not hasattr(backend, attr):
            raise TypeError(f"register_backend: {backend!r} has no {attr!r}")
    with _lock:
        _backends[backend.name] = backend
        _selected.clear()
    return backend


def backend_names() -> list[str]:
    return list(dict.fromkeys([*_BUILTIN_MODULES, *_backends]))


def get_backend(name: str) -> Optional[Backend]:
    """The backend called ``name``, importing a built-in one on first use; ``None`` if it cannot load."""
    if name not in _backends and name in _BUILTIN_MODULES and name not in _import_errors:
        try:
            importlib.import_module(_BUILTIN_MODULES[name])
        except Exception as e:  # an optional dependency that is broken, not just missing
            _import_errors[name] = f"{type(e).__name__}: {e}"
    return _backends.get(name)


def availability(name: str, device: torch.device) -> Availability:
    backend = get_backend(name)
    if backend is None:
        if name in _import_errors:
            return Availability(False, f"backend module failed to import ({_import_errors[name]})")
        return Availability(False, f"no backend named {name!r} is registered")
    try:
        return backend.availability(torch.device(device))
    except ValueError:
        if envs.problems():  # a bad setting is the user's to fix, not a reason to pass a backend over
            raise
        return Availability(False, f"availability probe raised {sys.exc_info()[0].__name__}: {sys.exc_info()[1]}")
    except Exception as e:
        return Availability(False, f"availability probe raised {type(e).__name__}: {e}")


def auto_order(device: torch.device) -> list[str]:
    """Preference list of ``auto`` on ``device``: vendor first, then portable, then the oracle."""
    kind = hardware.device_kind(device)
    if kind == "rocm":
        return ["aiter", "triton", "reference"]
    if kind == "cuda":
        return ["triton", "reference"]
    return ["reference"]


def configured_backend() -> str:
    return envs.HIPBMM_BACKEND


def set_backend(name: Optional[str]) -> None:
    """Python equivalent of ``HIPBMM_BACKEND``; ``None`` goes back to the environment."""
    if name is not None:
        name = str(name).lower()
        if name != "auto" and name not in backend_names():
            raise ValueError(
                f"set_backend: unknown backend {name!r}; expected one of auto, {', '.join(backend_names())}"
            )
    envs.set_override("HIPBMM_BACKEND", name)
    reset_selection()


def reset_selection() -> None:
    """Forget the backend chosen per device (the next call chooses again)."""
    with _lock:
        _selected.clear()
        _explained.clear()


# Settings that decide which backends `auto` finds usable, beside HIPBMM_BACKEND (the memo's key).
_SELECTION_SETTINGS = frozenset({"HIPBMM_USE_AITER", "TRITON_INTERPRET", *VLLM_FLAGS})


def _on_override(name: str) -> None:
    if name in _SELECTION_SETTINGS:
        reset_selection()


envs.add_listener(_on_override)


def _select(name: str, device: torch.device) -> Backend:
    if name != "auto" and name not in backend_names():
        raise ValueError(
            f"HIPBMM_BACKEND={name!r}: unknown backend; expected one of auto, {', '.join(backend_names())}"
        )
    if name != "auto":
        av = availability(name, device)
        if not av:
            raise BackendUnavailableError(
                f"HIPBMM_BACKEND={name}: the {name!r} backend cannot run on {device}: {av.reason}"
            )
        return _backends[name]
    skipped = []
    for candidate in auto_order(device):
        av = availability(candidate, device)
        if av:
            if skipped and (name, device) not in _explained:
                _explained.add((name, device))
                log.info("hipb_mm_fp8 on %s uses %r; passed over: %s", device, candidate, "; ".join(skipped))
            return _backends[candidate]
        skipped.append(f"{candidate}: {av.reason}")
    raise BackendUnavailableError(f"no hipb_mm_fp8 backend can run on {device}: {'; '.join(skipped)}")


def backend_for(device: torch.device) -> Backend:
    """The backend that serves ``device`` under the current setting (memoised).

    Runs on every op call: the setting is read raw (an override, else the environment) and the
    memo is keyed on that raw text, so a changed ``HIPBMM_BACKEND`` still takes effect at once
    while the common case costs two dict lookups.
    """
    raw = envs.raw("HIPBMM_BACKEND")
    key = (raw, device)
    backend = _selected.get(key)
    if backend is None:
        backend = _select(configured_backend(), device)
        with _lock:
            _selected[key] = backend
    return backend
