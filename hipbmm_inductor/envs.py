"""Every environment variable hipbmm-inductor reads, in one place.

Variables are read lazily, at the moment a value is needed, through this module (``envs.NAME``),
so tests, the CLI and users can change them at run time. Each one has a Python equivalent; a
value set from Python wins over the environment.

One rule for every value: a value outside the variable's list raises ``ValueError`` naming the
variable, the value and what it accepts, where the value is used (not once and then silently);
``python -m hipbmm_inductor info`` lists every bad value and exits 1. Our variables ignore
surrounding spaces and case, and our switches take ``1/0``, ``true/false``, ``yes/no``, ``on/off``;
an empty value turns a switch off (``HIPBMM_BACKEND`` and ``HIPBMM_TUNING_CACHE`` take an empty value
as their default). The switches of other programs (Triton, aiter, vLLM) take the spellings their owner reads as on,
matched exactly as the owner matches them, and ``0/false/no/off``.

| variable | default | Python equivalent | meaning |
|---|---|---|---|
| ``HIPBMM_BACKEND`` | ``auto`` | ``hipbmm_inductor.set_backend(name)`` | ``auto``, ``reference``, ``triton`` or ``aiter``: the backend behind ``hipb_mm_fp8``. ``auto`` picks the best usable one for the device; a named one that cannot run fails with the reason. Naming one also opts the compiler pass in on every device. |
| ``HIPBMM_LOWERING`` | ``1`` | ``hipbmm_inductor.enable()`` / ``disable()`` | ``0`` turns the Inductor rewrite off. |
| ``HIPBMM_TRITON_ACCUMULATION`` | ``promoted`` | ``envs.set_override("HIPBMM_TRITON_ACCUMULATION", "fast")`` | Triton backend on Hopper: ``promoted`` adds the fp8 tensor cores' partial sums into an fp32 accumulator every 64 to 256 products, depending on the tile (error within 1.01x of the bf16 rounding floor, as ``torch._scaled_mm`` by default); ``fast`` lets them accumulate in the tensor cores' reduced precision (as vLLM's CUTLASS kernels and ``use_fast_accum=True`` do: 1.3x to 2.8x the error at K = 4096 to 28672, and faster for some large-M shapes: docs/triton.md). Same results on other GPUs. |
| ``HIPBMM_TUNING`` | ``cache`` | ``hipbmm_inductor.tuning.set_mode(mode)`` | ``off`` (heuristic only), ``cache`` (use tuned results, never benchmark), ``online`` (tune on a miss, outside graph capture and tracing). |
| ``HIPBMM_TUNING_CACHE`` | user cache dir | ``hipbmm_inductor.tuning.set_cache_dir(path)`` | Folder of the tuning CSV files (one per device architecture). |
| ``HIPBMM_TUNING_RECORD`` | ``0`` | ``hipbmm_inductor.tuning.set_record(True)`` | ``1`` records shapes that ran untuned, for ``tune --from``. |
| ``HIPBMM_HIP_ONLINE_TUNING`` | ``0`` | ``hipbmm_inductor.tuning.rocm_online.enable_vendor_online_tuning()`` | ``1`` forwards ``HIP_ONLINE_TUNING=1`` to hipBLASLt before it initialises (aiter backend only; aiter then writes ``./hip_online_tuning_res.csv``). |
| ``HIP_ONLINE_TUNING`` | unset | -- | aiter/hipBLASLt's own online tuning, on for exactly ``1`` or ``true`` (aiter compares the raw string; ``True`` or ``yes`` are refused here rather than read differently from aiter). Set by hipbmm-inductor only when ``HIPBMM_HIP_ONLINE_TUNING=1``; a value the user set is left alone. |
| ``HIPBMM_USE_AITER`` | ``1`` | ``envs.set_override("HIPBMM_USE_AITER", False)`` | ``0`` keeps the aiter backend off outside vLLM (``auto`` then takes the next backend; ``HIPBMM_BACKEND=aiter`` fails with the reason). Ignored under vLLM (the ``vllm`` module is imported in the process), where vLLM's own switches decide. |
| ``VLLM_ROCM_USE_AITER`` | ``0`` | -- | vLLM's switch, read (never set) by the aiter backend under vLLM: the aiter backend is usable there only when it and the next two are all on. vLLM's spellings: ``1``/``true`` (any case) on, ``0``/``false``/``no``/``off`` off; others are refused. |
| ``VLLM_ROCM_USE_AITER_LINEAR`` | ``1`` | -- | vLLM's switch for aiter linear layers; see ``VLLM_ROCM_USE_AITER``. |
| ``VLLM_ROCM_USE_AITER_LINEAR_HIPBMM`` | ``1`` | -- | vLLM's switch for its hipBLASLt ``hipb_mm`` linear path; see ``VLLM_ROCM_USE_AITER``. |
| ``HIPBMM_VLLM_ENABLE`` | ``auto`` | -- | vLLM plugin: ``auto`` puts the hipb_mm_fp8 kernel first in vLLM's FP8 kernel list on ROCm only, where it declines unless its backend is fast there (aiter on MI3xx) or ``HIPBMM_BACKEND`` names one; on (``1``, or any switch spelling) does so on every platform with any usable backend (how CI runs vLLM's CPU engine); off (``0``) leaves vLLM alone. Read when vLLM loads its plugins and selects kernels. |
| ``TRITON_INTERPRET`` | ``0`` | -- | Triton's own switch, read by the Triton backend: on (``1``/``true``/``on``/``yes``, any case, as Triton reads it) runs its kernels in Triton's interpreter on the CPU (slow; for tests; needs numpy). |
| ``HIPBMM_HYPOTHESIS_PROFILE`` | ``ci`` | ``--hypothesis-profile`` | ``ci`` (modest), ``dev``, or ``deep`` (>= 10,000 examples per property). |
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

__all__ = ["ENV_VARS", "BACKEND_NAMES", "TUNING_MODES", "ACCUMULATION_MODES", "FLAG_VALUES", "problems", "set_override", "overriding"]

BACKEND_NAMES = ("auto", "reference", "triton", "aiter")
TUNING_MODES = ("off", "cache", "online")
ACCUMULATION_MODES = ("promoted", "fast")

# Values set from Python (set_backend, enable/disable, ...). They win over the environment.
_overrides: dict[str, object] = {}
_MISSING = object()

# The one rule, for every variable below: the value must be one of the variable's spellings
# (ours stripped and lower-cased first; another program's matched as that program matches it),
# else reading it raises ValueError naming the variable, the value and what it accepts. Our own
# switches all take the same spellings (HIPBMM_LOWERING's).
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off", "")
FLAG_VALUES = "1/0, true/false, yes/no, on/off"


@dataclass(frozen=True)
class _Spec:
    default: str
    spellings: Optional[dict[str, object]]  # spelling -> value; None: free text (parse decides)
    expected: str  # what the error message says is accepted, after "expected "
    parse: Optional[Callable[[str], object]] = None  # free text only
    # Foreign switches are matched the way their owner matches them: a padded " 1" is off for
    # Triton (no strip), "True" is off for aiter (case-sensitive).
    strip: bool = True
    case_sensitive: bool = False


def _flag(default: str) -> _Spec:
    return _Spec(default, {**{v: True for v in _ON}, **{v: False for v in _OFF}}, f"one of {FLAG_VALUES}")


def _foreign_flag(default: str, owner: str, on: tuple[str, ...], case_sensitive: bool = False) -> _Spec:
    # Another program's switch, read by us: accept exactly the spellings its owner reads as on,
    # and our usual ones for off. Anything else (e.g. "yes" where the owner only knows "1" and
    # "true") raises, instead of being read one way here and the other way by its owner.
    spellings = {**{v: False for v in _OFF}, **{v: True for v in on}}
    return _Spec(default, spellings, f"{'/'.join(on)} (on, as {owner} reads it) or 0/false/no/off (off)",
                 strip=False, case_sensitive=case_sensitive)


def _choice(default: str, choices: tuple[str, ...], aliases: Optional[dict[str, str]] = None) -> _Spec:
    spellings: dict[str, object] = {c: c for c in choices}
    spellings.update(aliases or {})
    return _Spec(default, spellings, f"one of {', '.join(choices)}")


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hipbmm_inductor")


def _backend_name(raw: str) -> str:
    # Any registered backend name is valid (third parties register more): the registry checks it
    # where the backend is selected, naming HIPBMM_BACKEND and the registered names.
    return raw.lower() or "auto"


def _cache_dir(raw: str) -> str:
    return raw or _default_cache_dir()


_SPECS: dict[str, _Spec] = {
    "HIPBMM_BACKEND": _Spec("auto", None, "auto or a registered backend name", parse=_backend_name),
    "HIPBMM_LOWERING": _flag("1"),
    "HIPBMM_TRITON_ACCUMULATION": _choice("promoted", ACCUMULATION_MODES),
    "HIPBMM_TUNING": _choice("cache", TUNING_MODES),
    "HIPBMM_TUNING_CACHE": _Spec("", None, "a folder", parse=_cache_dir),
    "HIPBMM_TUNING_RECORD": _flag("0"),
    "HIPBMM_HIP_ONLINE_TUNING": _flag("0"),
    "HIPBMM_USE_AITER": _flag("1"),
    # auto, or a switch with the same spellings as every other switch (normalised to "1"/"0").
    "HIPBMM_VLLM_ENABLE": _choice("auto", ("auto", "1", "0"),
                                  {**{v: "1" for v in _ON}, **{v: "0" for v in _OFF if v}}),
    "HIPBMM_HYPOTHESIS_PROFILE": _choice("ci", ("ci", "dev", "deep")),
    # Read, never set, by us: Triton's interpreter switch (the Triton backend then runs its
    # kernels on the CPU, which is how CI tests them). Triton reads 1/true/on/yes, any case.
    "TRITON_INTERPRET": _foreign_flag("0", "Triton", ("1", "true", "on", "yes")),
    # aiter/hipBLASLt's own online-tuning switch: read to respect a user's
    # explicit value; set only by tuning.rocm_online, when HIPBMM_HIP_ONLINE_TUNING asks for it.
    # aiter's C++ side compares the raw string with "1" and "true".
    "HIP_ONLINE_TUNING": _foreign_flag("0", "aiter", ("1", "true"), case_sensitive=True),
    # Read, never set, by us: vLLM's switches for its aiter linear path (docs/contract.md, "vLLM"); vLLM
    # reads "1" and "true", any case, as on.
    "VLLM_ROCM_USE_AITER": _foreign_flag("0", "vLLM", ("1", "true")),
    "VLLM_ROCM_USE_AITER_LINEAR": _foreign_flag("1", "vLLM", ("1", "true")),
    "VLLM_ROCM_USE_AITER_LINEAR_HIPBMM": _foreign_flag("1", "vLLM", ("1", "true")),
}


def _read(name: str) -> object:
    spec = _SPECS[name]
    raw = os.environ.get(name)
    value = spec.default if raw is None else raw
    if spec.spellings is None:
        return spec.parse(value.strip())  # type: ignore[misc]
    key = value.strip() if spec.strip else value
    if not spec.case_sensitive:
        key = key.lower()
    if key not in spec.spellings:
        raise ValueError(f"{name}={value!r}: expected {spec.expected}")
    return spec.spellings[key]


ENV_VARS: dict[str, Callable[[], object]] = {name: (lambda name=name: _read(name)) for name in _SPECS}


def _check_override(name: str, value: object) -> None:
    spec = _SPECS[name]
    if spec.spellings is None:
        return
    # A switch takes True/False, a choice one of its words: the type and value a read gives.
    if not any(type(v) is type(value) and v == value for v in spec.spellings.values()):
        is_switch = isinstance(next(iter(spec.spellings.values())), bool)
        raise ValueError(f"{name}={value!r}: expected " + ("True or False" if is_switch else spec.expected))


def problems() -> list[str]:
    """One message per environment variable whose value breaks its rule and is not overridden from
    Python (``set_override`` refuses a bad value, so an override never does).

    What ``status()`` and ``python -m hipbmm_inductor info`` report; every other reader raises.
    """
    out = []
    for name in _SPECS:
        if name in _overrides:
            continue  # checked by set_override; it wins over the environment
        try:
            _read(name)
        except ValueError as e:
            out.append(str(e))
    return out


def set_override(name: str, value: object) -> None:
    """Python equivalent of an environment variable; ``None`` removes the override."""
    if name not in ENV_VARS:
        raise KeyError(f"unknown hipbmm_inductor setting {name!r}; known: {sorted(ENV_VARS)}")
    if value is None:
        _overrides.pop(name, None)
    else:
        _check_override(name, value)
        _overrides[name] = value
    for listener in list(_listeners):
        listener(name)


@contextmanager
def overriding(settings: dict) -> Iterator[None]:
    """:func:`set_override` for each of ``settings`` (name -> value) over a block; after it, each
    setting has its previous override again (or none)."""
    previous = {name: _overrides.get(name) for name in settings}
    try:
        for name, value in settings.items():
            set_override(name, value)
        yield
    finally:
        for name, value in previous.items():
            set_override(name, value)


# Called with the variable's name after every set_override: what memoises a decision made from a
# setting (the backend chosen per device, aiter's launch plans) forgets it there.
_listeners: list = []


def add_listener(listener) -> None:
    """Call ``listener(name)`` after every :func:`set_override` (once per listener)."""
    if listener not in _listeners:
        _listeners.append(listener)


def raw(name: str) -> object:
    """The setting as given, unparsed: the Python override, else the environment's value (bytes on
    POSIX), else ``None``. For memo keys on hot paths: two dict reads, where ``os.environ.get``
    encodes the name on every call; parse with ``envs.NAME``."""
    value = _overrides.get(name, _MISSING)
    if value is not _MISSING:
        return value
    data = getattr(os.environ, "_data", None)
    if data is None:  # not CPython's os._Environ: the portable way
        return os.environ.get(name)
    key = _ENCODED.get(name)
    if key is None:
        key = _ENCODED[name] = os.environ.encodekey(name)
    return data.get(key)


_ENCODED: dict = {}


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
