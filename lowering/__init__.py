"""hipbmm_inductor.lowering: Inductor passes that rewrite scaled-mm patterns into hipb_mm_fp8.

Under ``torch._inductor.config.freezing = True`` and ``torch.no_grad()``, FP8 linears written as
``torch._scaled_mm`` (rowwise), ``torch.nn.functional.scaled_mm`` (RowWise recipes) or vLLM's
channelwise fallback become ``torch.ops.hipbmm.hipb_mm_fp8`` on a weight that is transposed and
shuffled once, at compile time. See docs/lowering.md.

- :func:`enable` / :func:`disable` / :func:`is_enabled`: the switch (``HIPBMM_LOWERING``).
- :func:`counters` / :func:`reset_counters`: what matched, what was rewritten, what was skipped
  and why.
- :class:`LoweringSettingError`: what a compile with an FP8 candidate raises when
  ``HIPBMM_LOWERING`` or ``HIPBMM_BACKEND`` holds an invalid value.
- :func:`install`: put the pass into Inductor's config now (``import hipbmm_inductor`` arranges
  this by itself, when Inductor loads); call it again after setting your own
  ``joint_custom_pre_pass`` to have it wrapped instead of replaced.

Modules: :mod:`.patterns` (the forms: what each looks like in the graph and how it is read),
:mod:`.gemm` (what a candidate is, the graph readers they share), :mod:`.checks` (when a candidate
is skipped), :mod:`.rewrite` (the rewrite), :mod:`.inductor_pass` (registration, cache key), :mod:`.hook`
(lazy install), :mod:`.counters`.
"""

from __future__ import annotations

from hipbmm_inductor import envs

from .counters import LoweringCounters, counters, reset_counters

__all__ = ["enable", "disable", "is_enabled", "install", "counters", "reset_counters", "LoweringCounters",
           "LoweringSettingError"]


class LoweringSettingError(ValueError):
    """An invalid hipbmm setting (environment variable or Python override) that a candidate needed.

    Raised out of ``torch.compile`` (wrapped by Dynamo) only for a graph with an FP8 candidate; the
    message is the one :mod:`hipbmm_inductor.envs` or the backend registry formats: the variable,
    the value seen and the allowed values.
    """


def is_enabled() -> bool:
    return bool(envs.HIPBMM_LOWERING)


def enable() -> None:
    """Python equivalent of ``HIPBMM_LOWERING=1``."""
    envs.set_override("HIPBMM_LOWERING", True)


def disable() -> None:
    """Python equivalent of ``HIPBMM_LOWERING=0``."""
    envs.set_override("HIPBMM_LOWERING", False)


def install():
    """Install the pass into ``torch._inductor.config`` now (imports Inductor); idempotent."""
    # Imports Inductor (about 1.3 s, lowering/hook.py): `import hipbmm_inductor` must not.
    from .inductor_pass import install as _install

    return _install()
