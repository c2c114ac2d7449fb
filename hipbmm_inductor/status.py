"""``hipbmm_inductor.status()``: what runs here, and why the rest does not."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from . import __version__, envs, hardware
from .lowering import is_enabled
from .ops import registry
from .ops.errors import BackendUnavailableError

__all__ = ["BackendStatus", "Status", "status"]

_INVALID = "invalid"  # what a field shows when its setting has a bad value (the message is in config_errors)


@dataclass(frozen=True)
class BackendStatus:
    name: str
    usable: bool
    reason: str
    fast: bool


@dataclass(frozen=True)
class Status:
    version: str
    python: str
    torch: str
    triton: Optional[str]
    device: str
    device_name: str
    platform: str  # cpu | cuda | rocm
    arch: Optional[str]
    configured_backend: str
    chosen_backend: Optional[str]
    choice_error: Optional[str]
    lowering_enabled: bool | str  # "invalid" under a bad HIPBMM_LOWERING
    tuning_mode: str
    tuning_cache: str
    triton_accumulation: str
    backends: list[BackendStatus] = field(default_factory=list)
    # What the compiler pass does under HIPBMM_BACKEND=auto on this device, in one line.
    auto_rewrites: str = ""
    # Every environment variable (or Python override) whose value breaks its rule, one message
    # each; `info` exits non-zero when there is any.
    config_errors: list[str] = field(default_factory=list)

    def _lowering(self) -> str:
        if self.lowering_enabled == _INVALID:
            return _INVALID
        return "enabled" if self.lowering_enabled else "disabled"

    def as_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lines = [
            f"hipbmm_inductor {self.version}  (python {self.python}, torch {self.torch}, "
            f"triton {self.triton or 'not installed'})",
            f"device:   {self.device} ({self.device_name}); platform {self.platform}"
            + (f", arch {self.arch}" if self.arch else ""),
            f"backend:  HIPBMM_BACKEND={self.configured_backend} -> "
            + (self.chosen_backend or f"none ({self.choice_error})"),
            f"lowering: {self._lowering()}",
            f"tuning:   {self.tuning_mode} (cache folder {self.tuning_cache})",
            f"triton:   {self.triton_accumulation} accumulation (HIPBMM_TRITON_ACCUMULATION)",
        ]
        if self.auto_rewrites:
            lines.append(f"auto:     {self.auto_rewrites}")
        for e in self.config_errors:
            lines.append(f"invalid:  {e}")
        lines.append("backends:")
        width = max(len(b.name) for b in self.backends) if self.backends else 0
        for b in self.backends:
            mark = "usable " if b.usable else "no     "
            fast = " [fast here]" if b.fast else ""
            lines.append(f"  {b.name:<{width}}  {mark} {b.reason}{fast}")
        return "\n".join(lines)


def _setting(name: str) -> str:
    # status() is what a user runs when something is wrong: a bad value is reported (in
    # config_errors, once), not raised.
    try:
        return str(getattr(envs, name))
    except ValueError:
        return _INVALID


def _guarded(fn, *args):
    try:
        return fn(*args)
    except ValueError:  # a bad setting read on the way: reported in config_errors
        return _INVALID


def _triton_version() -> Optional[str]:
    try:
        import triton  # optional (the `triton` extra), and `import hipbmm_inductor` must not load it

        return triton.__version__
    except Exception:
        return None


def _default_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _auto_rewrites(device: torch.device, rows: list[BackendStatus]) -> str:
    """What ``auto`` does with FP8 linears here: the first usable backend of the device's
    preference list says (``describe_routing``), or a fast one rewrites every match."""
    for name in registry.auto_order(device):
        row = next((r for r in rows if r.name == name), None)
        if row is None or not row.usable:
            continue
        backend = registry.get_backend(name)
        describe = getattr(backend, "describe_routing", None)
        if describe is not None:
            text = _guarded(describe, device)
            if text != _INVALID:
                return f"{name}: {text}"
        if row.fast:
            return f"{name}: auto rewrites every eligible FP8 linear (the {name} backend beats the vendor GEMM here)"
        return (f"{name}: auto keeps the vendor GEMM (no rewrite); name a backend (HIPBMM_BACKEND={name}) "
                f"to rewrite anyway")
    return "no usable backend: auto rewrites nothing"


def status(device: Optional[torch.device | str] = None) -> Status:
    """Report platform, the configured and chosen backend, and each backend's usability."""
    # NOTE: importing the tuner costs about as much as the rest of the package (`python -X importtime`
    # shows it): the first status() loads it, not `import hipbmm_inductor`.
    from . import tuning
    from .tuning.store import Store

    device = torch.device(device) if device is not None else _default_device()
    name = hardware.device_name(device)
    rows = []
    for b in registry.backend_names():
        try:
            av = registry.availability(b, device)
        except ValueError:  # a bad setting read by the probe: reported in config_errors
            av = registry.Availability(False, "not probed: a setting it reads is invalid (see 'invalid:')")
        backend = registry.get_backend(b)
        fast = bool(av) and backend is not None and bool(_guarded(backend.is_fast, device) is True)
        rows.append(BackendStatus(b, av.ok, av.reason, fast))
    tuning_mode = _guarded(tuning.get_mode)
    chosen, err = None, None
    config_errors = envs.problems()
    folder = _guarded(tuning.cache_dir) if tuning_mode != _INVALID else None
    problem = Store(folder).folder_problem() if isinstance(folder, str) else None
    if problem:  # as the cache and tune commands refuse it
        config_errors.append(f"HIPBMM_TUNING_CACHE / tuning.set_cache_dir: {problem}")
    try:
        chosen = registry.backend_for(device).name
    except BackendUnavailableError as e:
        err = str(e)
    except ValueError as e:  # HIPBMM_BACKEND names no registered backend: a bad value like the others
        err = str(e)
        config_errors.append(err)
    return Status(
        auto_rewrites=_auto_rewrites(device, rows),
        version=__version__,
        python=platform.python_version(),
        torch=torch.__version__,
        triton=_triton_version(),
        device=str(device),
        device_name=name,
        platform=hardware.device_kind(device),
        arch=hardware.arch(device),
        configured_backend=_setting("HIPBMM_BACKEND"),
        chosen_backend=chosen,
        choice_error=err,
        lowering_enabled=_guarded(is_enabled),
        tuning_mode=tuning_mode,
        tuning_cache=_guarded(tuning.cache_dir) if tuning_mode != _INVALID else _setting("HIPBMM_TUNING_CACHE"),
        triton_accumulation=_setting("HIPBMM_TRITON_ACCUMULATION"),
        backends=rows,
        config_errors=config_errors,
    )
