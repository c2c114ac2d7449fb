"""Registration: the freezing patterns, and the custom pass that carries them into Inductor.

Two pieces, both installed once:

- the :mod:`.patterns` forms, registered into Inductor's *freezing* pattern passes (the only
  place where a rewrite on a frozen weight is followed by a ``constant_fold``);
- :class:`HipbmmLoweringPass`, a ``CustomGraphPass`` set as ``joint_custom_pre_pass``. Its call
  registers the patterns and the op's lowering (:mod:`.extern_call`) on the first compile (so
  ``import hipbmm_inductor`` never imports Inductor's pattern matcher), then runs whatever pass the user had configured there. Its
  ``uuid()`` puts the lowering's state into the FX graph cache key.

NOTE: the freezing patterns are *not* part of Inductor's cache key; a custom pass with a
``uuid()`` is. The uuid hashes this package's lowering source, the package version, whether the
lowering is enabled, the configured backend and the per-device rewrite policy, so toggling any of
them never serves an artifact compiled under the other setting (tests/lowering/test_cache.py).

NOTE: ``joint_custom_pre_pass`` rather than ``post_grad_custom_post_pass``: the joint passes run
*before* ``freeze()`` (compile_fx.fw_compiler_freezing), so the first compile of a process already
has the patterns registered; a post-grad pass runs after freezing, too late for that compile.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pathlib
import sys
from typing import Any, Optional

import torch
import torch._inductor.config as inductor_config
from torch._inductor.custom_graph_pass import CustomGraphPass

from hipbmm_inductor import __version__, envs
from hipbmm_inductor.ops import registry

from . import LoweringSettingError
from .counters import record_skip
from .gemm import DISABLED, explicit_backend, lowering_enabled
from .hook import take_pending
from .patterns import FORMS, find_candidates

__all__ = ["HipbmmLoweringPass", "install", "register_patterns", "fingerprint"]

log = logging.getLogger("hipbmm_inductor")

_HERE = pathlib.Path(__file__).resolve().parent
# The files whose text decides what the pass does to a graph.
_SOURCES = (
    *sorted(_HERE.glob("*.py")),
    _HERE.parent / "ops" / "validate.py",
    _HERE.parent / "ops" / "layout.py",
    _HERE.parent / "ops" / "hipb_mm_fp8.py",  # the entry generated code calls (.extern_call)
)


@functools.cache
def register_patterns() -> None:
    """Register every form into Inductor's freezing pattern passes (once per process)."""
    # Not at the top: this module loads while Inductor's config does (lowering/hook.py), and the
    # pattern matcher imported then is a circular import inside Inductor.
    from torch._inductor.fx_passes.freezing_patterns import register_freezing_graph_pattern

    for form in FORMS:
        register_freezing_graph_pattern(
            form.pattern(), extra_check=form.extra_check, pass_number=form.pass_number
        )(form.handler)
    log.debug("hipbmm lowering: registered %d freezing patterns", len(FORMS))


@functools.cache
def _source_hash() -> str:
    h = hashlib.sha256()
    for path in _SOURCES:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _policy() -> list:
    """What the pass would decide per device type present: the backend, the version of its routing
    rules (``routing_version``, for a backend that routes by shape) and its per-device answer."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = []
    for dev in devices:
        try:
            backend = registry.backend_for(torch.device(dev))
            if callable(getattr(backend, "is_fast_for", None)):
                # Routed per shape: the rules' version stands for every answer they would give.
                rule = ("per shape", str(getattr(backend, "routing_version", "")))
            else:
                rule = ("per device", str(getattr(backend, "routing_version", "")), bool(backend.is_fast(torch.device(dev))))
            out.append((dev, backend.name, explicit_backend(), rule))
        except Exception as e:  # an unusable named backend or a bad setting: the pass skips or says so
            out.append((dev, f"unavailable: {type(e).__name__}: {e}"))
    return out


def fingerprint() -> str:
    """Everything that changes what the lowering does to a graph, hashed.

    Never raises: an invalid ``HIPBMM_LOWERING`` enters the key as its error message (the key
    still changes with the value); only a compile that has a candidate reports it.
    """
    try:
        enabled: object = lowering_enabled()
    except LoweringSettingError as e:
        enabled = f"invalid: {e}"
    state = (_source_hash(), __version__, torch.__version__, enabled, envs.HIPBMM_BACKEND,
             envs.is_set("HIPBMM_BACKEND"))
    if enabled is True:
        state += (tuple(_policy()),)
    return hashlib.sha256(repr(state).encode()).hexdigest()


NOT_FROZEN = (
    "torch._inductor.config.freezing is False, so weights stay graph inputs and cannot be "
    "pre-shuffled: set torch._inductor.config.freezing = True and compile under torch.no_grad()"
)
GRAD_ENABLED = (
    "grad mode is on, so Inductor does not freeze the weights: run the compiled model under "
    "torch.no_grad() or torch.inference_mode()"
)


def note_candidates_without_freezing(graph: torch.fx.Graph) -> None:
    """Where Inductor will not freeze this graph, count its candidates as skipped and say why once.

    The rewrite lives in the freezing patterns, which then never run: without this the lowering
    would be a silent no-op. Called on the joint graph, once per compile, before freezing.
    """
    # NOTE: the condition compile_fx uses to pick its freezing forward compiler (2.11 to 2.13).
    if inductor_config.freezing and not torch.is_grad_enabled():
        return  # the freezing patterns see these candidates and count them
    try:
        found = find_candidates(graph)
    except Exception:  # never break a compile
        log.warning("hipbmm lowering: could not scan the graph for candidates", exc_info=True)
        return
    if not found:
        return
    enabled = lowering_enabled()  # a candidate needs the setting: an invalid value raises, naming it
    reason = DISABLED if not enabled else NOT_FROZEN if not inductor_config.freezing else GRAD_ENABLED
    for form, _node in found:
        record_skip(form, reason)
    # Under vLLM weights are graph inputs by design (its plugin prepacks them at load time instead):
    # nothing for the user to fix there, so no warning.
    quiet = not enabled or "vllm" in sys.modules
    (log.debug if quiet else log.warning)(
        "hipbmm lowering: %d FP8 GEMM(s) in this graph not rewritten: %s", len(found), reason)


def _as_list(p: Any) -> list:
    if p is None:
        return []
    return list(p) if isinstance(p, (list, tuple)) else [p]


class HipbmmLoweringPass(CustomGraphPass):
    """Registers the freezing patterns, then runs the passes it wraps (the user's, if any)."""

    def __init__(self, wrapped: Any = None) -> None:
        self.wrapped = _as_list(wrapped)

    def __call__(self, graph: torch.fx.Graph) -> None:
        try:
            register_patterns()
        except Exception:  # never break a compile: the model then runs unrewritten
            log.warning("hipbmm lowering: could not register the freezing patterns", exc_info=True)
        try:
            # Imported on the first compile, like the pattern matcher: this module loads while
            # Inductor's config does, before Inductor's IR and lowerings may be imported.
            from . import extern_call

            extern_call.register()
        except Exception:  # never break a compile: rewritten nodes then run as opaque op calls
            log.warning("hipbmm lowering: could not register the hipb_mm_fp8 lowering", exc_info=True)
        note_candidates_without_freezing(graph)
        for p in self.wrapped:
            p(graph)

    def uuid(self) -> Optional[Any]:
        parts = [fingerprint()]
        for p in self.wrapped:
            # A wrapped pass without a uuid makes Inductor bypass the cache, exactly as it would
            # have without us in between.
            u = p.uuid() if isinstance(p, CustomGraphPass) else None
            if u is None:
                return None
            parts.append(u)
        return hashlib.sha256(repr(parts).encode()).hexdigest()


def install() -> HipbmmLoweringPass:
    """Put :class:`HipbmmLoweringPass` in ``joint_custom_pre_pass``, wrapping what is there.

    Idempotent. A pass the user sets *after* this replaces ours; call ``install()`` again to wrap
    it (or set yours before importing hipbmm_inductor).
    """
    current = inductor_config.joint_custom_pre_pass
    if isinstance(current, HipbmmLoweringPass):
        return current
    ours = HipbmmLoweringPass(current)
    inductor_config.joint_custom_pre_pass = ours
    log.debug("hipbmm lowering: installed as joint_custom_pre_pass (wrapping %r)", current)
    return ours


def _install_if_deferred() -> None:
    if take_pending():
        try:
            install()
        except Exception:  # never break an import
            log.warning("hipbmm lowering: could not install the Inductor pass", exc_info=True)


_install_if_deferred()
