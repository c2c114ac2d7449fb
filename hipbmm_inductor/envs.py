"""Every environment variable hipbmm-inductor reads, in one place.

Variables are read lazily, at the moment a value is needed, through this module (``envs.NAME``),
so tests, the CLI and users can change them at run time. Each one has a Python equivalent; a
value set from Python wins over the environment.

| variable | default | Python equivalent | meaning |
|---|---|---|---|
| ``HIPBMM_BACKEND`` | ``auto`` | ``hipbmm_inductor.set_backend(name)`` | ``auto``, ``reference``, ``triton`` or ``aiter``: the backend behind ``hipb_mm_fp8``. ``auto`` picks the best usable one for the device; a named one that cannot run fails with the reason. Naming one also opts the compiler pass in on every device. |
| ``HIPBMM_LOWERING`` | ``1`` | ``hipbmm_inductor.enable()`` / ``disable()`` | ``0`` turns the Inductor rewrite off. |
| ``HIPBMM_TRITON_ACCUMULATION`` | ``promoted`` | ``envs.set_override("HIPBMM_TRITON_ACCUMULATION", "fast")`` | Triton backend on Hopper: ``promoted`` adds the fp8 tensor cores' partial sums into an fp32 accumulator every 64 to 256 products, depending on the tile (error within 1.01x of the bf16 rounding floor, as ``torch._scaled_mm`` by default); ``fast`` lets them accumulate in the tensor cores' reduced precision (as vLLM's CUTLASS kernels and ``use_fast_accum=True`` do: 1.3x to 2.8x the error at K = 4096 to 28672, and faster for some large-M shapes: docs/triton.md). Same results on other GPUs. |
| ``HIPBMM_TUNING`` | ``cache`` | ``hipbmm_inductor.tuning.set_mode(mode)`` | ``off`` (heuristic only), ``cache`` (use tuned results, never benchmark), ``online`` (tune on a miss, outside graph capture and tracing). |
| ``HIPBMM_TUNING_CACHE`` | user cache dir | ``hipbmm_inductor.tuning.set_cache_dir(path)`` | Folder of the tuning CSV files (one per device architecture). |
| ``HIPBMM_TUNING_RECORD`` | ``0`` | ``hipbmm_inductor.tuning.set_record(True)`` | ``1`` records shapes that ran untuned, for ``tune --from``. |
| ``HIPBMM_HIP_ONLINE_TUNING`` | ``0`` | ``hipbmm_inductor.tuning.vendor.enable_vendor_online_tuning()`` | ``1`` forwards ``HIP_ONLINE_TUNING=1`` to hipBLASLt before it initialises (aiter backend only; aiter then writes ``./hip_online_tuning_res.csv``). |
| ``HIP_ONLINE_TUNING`` | unset | -- | aiter/hipBLASLt's own online tuning (SPEC section 3). Set by hipbmm-inductor only when ``HIPBMM_HIP_ONLINE_TUNING=1``; a value the user set is left alone. |
| ``HIPBMM_USE_AITER`` | ``1`` | ``envs.set_override("HIPBMM_USE_AITER", False)`` | ``0`` keeps the aiter backend off outside vLLM (``auto`` then takes the next backend; ``HIPBMM_BACKEND=aiter`` fails with the reason). Ignored under vLLM (the ``vllm`` module is imported in the process), where vLLM's own switches decide. |
| ``VLLM_ROCM_USE_AITER`` | ``0`` | -- | vLLM's switch, read (never set) by the aiter backend under vLLM: the aiter backend is usable there only when it and the next two are all ``1``. |
| ``VLLM_ROCM_USE_AITER_LINEAR`` | ``1`` | -- | vLLM's switch for aiter linear layers; see ``VLLM_ROCM_USE_AITER``. |
| ``VLLM_ROCM_USE_AITER_LINEAR_HIPBMM`` | ``1`` | -- | vLLM's switch for its hipBLASLt ``hipb_mm`` linear path; see ``VLLM_ROCM_USE_AITER``. |
| ``HIPBMM_VLLM_ENABLE`` | ``auto`` | -- | vLLM plugin: ``auto`` puts the hipb_mm_fp8 kernel first in vLLM's FP8 kernel list on ROCm only, where it declines unless its backend is fast there (aiter on MI3xx) or ``HIPBMM_BACKEND`` names one; ``1`` does so on every platform with any usable backend (how CI runs vLLM's CPU engine); ``0`` leaves vLLM alone. Read when vLLM loads its plugins and selects kernels. |
| ``TRITON_INTERPRET`` | ``0`` | -- | Triton's own switch, read by the Triton backend: ``1`` runs its kernels in Triton's interpreter on the CPU (slow; for tests). |
| ``HIPBMM_HYPOTHESIS_PROFILE`` | ``ci`` | ``--hypothesis-profile`` | ``ci`` (modest), ``dev``, or ``deep`` (>= 10,000 examples per property). |
"""

from __future__ import annotations

import os
from typing import Callable

__all__ = ["ENV_VARS", "BACKEND_NAMES", "TUNING_MODES", "ACCUMULATION_MODES"]

BACKEND_NAMES = ("auto", "reference", "triton", "aiter")
TUNING_MODES = ("off", "cache", "online")
ACCUMULATION_MODES = ("promoted", "fast")

# Values set from Python (set_backend, enable/disable, ...). They win over the environment.
_overrides: dict[str, object] = {}
_MISSING = object()
_environ = os.environ


def _flag(name: str, default: str) -> bool:
    raw = os.environ.get(name, default).strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name}={raw!r}: expected one of 1/0, true/false, yes/no, on/off")


def _choice(name: str, default: str) -> str:
    choices = _CHOICES[name]
    raw = os.environ.get(name, default).strip().lower()
    if raw not in choices:
        raise ValueError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return raw


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hipbmm_inductor")


# Settings whose value is one of a few words: the environment and Python overrides are checked
# against the same list.
_CHOICES = {
    "HIPBMM_TUNING": TUNING_MODES,
    "HIPBMM_TRITON_ACCUMULATION": ACCUMULATION_MODES,
    "HIPBMM_VLLM_ENABLE": ("auto", "1", "0"),
    "HIPBMM_HYPOTHESIS_PROFILE": ("ci", "dev", "deep"),
}

ENV_VARS: dict[str, Callable[[], object]] = {
    # Any registered backend name is valid (third parties register more); the registry checks it.
    "HIPBMM_BACKEND": lambda: os.environ.get("HIPBMM_BACKEND", "auto").strip().lower() or "auto",
    "HIPBMM_LOWERING": lambda: _flag("HIPBMM_LOWERING", "1"),
    "HIPBMM_TRITON_ACCUMULATION": lambda: _choice("HIPBMM_TRITON_ACCUMULATION", "promoted"),
    "HIPBMM_TUNING": lambda: _choice("HIPBMM_TUNING", "cache"),
    "HIPBMM_TUNING_CACHE": lambda: os.environ.get("HIPBMM_TUNING_CACHE") or _default_cache_dir(),
    "HIPBMM_TUNING_RECORD": lambda: _flag("HIPBMM_TUNING_RECORD", "0"),
    "HIPBMM_HIP_ONLINE_TUNING": lambda: _flag("HIPBMM_HIP_ONLINE_TUNING", "0"),
    "HIPBMM_USE_AITER": lambda: _flag("HIPBMM_USE_AITER", "1"),
    "HIPBMM_VLLM_ENABLE": lambda: _choice("HIPBMM_VLLM_ENABLE", "auto"),
    "HIPBMM_HYPOTHESIS_PROFILE": lambda: _choice("HIPBMM_HYPOTHESIS_PROFILE", "ci"),
    # Read, never set, by us: Triton's interpreter switch (the Triton backend then runs its
    # kernels on the CPU, which is how CI tests them).
    "TRITON_INTERPRET": lambda: _flag("TRITON_INTERPRET", "0"),
    # aiter/hipBLASLt's own online-tuning switch (SPEC section 3): read to respect a user's
    # explicit value; set only by tuning.vendor, when HIPBMM_HIP_ONLINE_TUNING asks for it.
    "HIP_ONLINE_TUNING": lambda: _flag("HIP_ONLINE_TUNING", "0"),
    # Read, never set, by us: vLLM's switches for its aiter linear path (SPEC section 4).
    "VLLM_ROCM_USE_AITER": lambda: _flag("VLLM_ROCM_USE_AITER", "0"),
    "VLLM_ROCM_USE_AITER_LINEAR": lambda: _flag("VLLM_ROCM_USE_AITER_LINEAR", "1"),
    "VLLM_ROCM_USE_AITER_LINEAR_HIPBMM": lambda: _flag("VLLM_ROCM_USE_AITER_LINEAR_HIPBMM", "1"),
}


def set_override(name: str, value: object) -> None:
    """Python equivalent of an environment variable; ``None`` removes the override."""
    if name not in ENV_VARS:
        raise KeyError(f"unknown hipbmm_inductor setting {name!r}; known: {sorted(ENV_VARS)}")
    if value is not None and name in _CHOICES and value not in _CHOICES[name]:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(_CHOICES[name])}")
    if value is None:
        _overrides.pop(name, None)
    else:
        _overrides[name] = value


def raw(name: str) -> object:
    """The setting as given, unparsed: the Python override, else the environment's text, else
    ``None``. Cheap (two dict lookups), for memo keys on hot paths; parse with ``envs.NAME``."""
    value = _overrides.get(name, _MISSING)
    return _environ.get(name) if value is _MISSING else value


def is_overridden(name: str) -> bool:
    return name in _overrides


def is_set(name: str) -> bool:
    """True where the user chose a value (from Python or the environment), not a default."""
    return name in _overrides or name in os.environ


def __getattr__(name: str) -> object:
    if name in _overrides:
        return _overrides[name]
    if name in ENV_VARS:
        return ENV_VARS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(ENV_VARS))
