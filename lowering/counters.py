"""What the lowering did: per pattern form, how many candidates matched, were rewritten, or were
skipped and why. Users read it with :func:`hipbmm_inductor.lowering.counters`; tests reset it with
:func:`reset_counters`.

A *candidate* is a graph region with the structure of one of the forms (a ``_scaled_mm`` call, a
``_scaled_mm_v2`` call, or the channelwise ``_scaled_mm -> * scale_a * scale_b -> .to()`` chain).
Every candidate ends as exactly one of ``rewritten`` or ``skipped[reason]``.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["FormCounts", "LoweringCounters", "counters", "reset_counters", "record_rewrite", "record_skip"]

FORMS = ("scaled_mm", "scaled_mm_v2", "channelwise")

NOTHING_SEEN = (
    "no scaled-mm candidates seen. Common causes: the model has no FP8 GEMM in a compiled graph "
    "(code that widens fp8 weights to a float dtype and multiplies in the scales before an ordinary "
    "matmul or F.linear has none: the pass takes torch._scaled_mm and F.scaled_mm, and freezing folds "
    "such a weight into a float constant); "
    "Dynamo ran it outside the graph (torch._scaled_mm with per-token scales under "
    "torch._dynamo.decorators.mark_unbacked graph-breaks in PyTorch's meta function: use "
    "torch._dynamo.mark_dynamic; torch.nn.functional.scaled_mm before PyTorch 2.13); or the compile "
    "was served from Inductor's cache, where no pass runs (TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 "
    "compiles afresh)"
)


@dataclass
class FormCounts:
    matched: int = 0
    rewritten: int = 0
    skipped: Counter = field(default_factory=Counter)


@dataclass
class LoweringCounters:
    """A snapshot; mutating it does not affect the live counters."""

    forms: dict[str, FormCounts]

    @property
    def matched(self) -> int:
        return sum(f.matched for f in self.forms.values())

    @property
    def rewritten(self) -> int:
        return sum(f.rewritten for f in self.forms.values())

    @property
    def skipped(self) -> Counter:
        total: Counter = Counter()
        for f in self.forms.values():
            total.update(f.skipped)
        return total

    def as_dict(self) -> dict:
        return {
            name: {"matched": f.matched, "rewritten": f.rewritten, "skipped": dict(f.skipped)}
            for name, f in self.forms.items()
        }

    def format(self) -> str:
        lines = []
        for name, f in self.forms.items():
            if not f.matched:
                continue
            lines.append(f"{name}: matched {f.matched}, rewritten {f.rewritten}, skipped {sum(f.skipped.values())}")
            for reason, n in sorted(f.skipped.items()):
                lines.append(f"    skipped {n} x: {reason}")
        return "\n".join(lines) if lines else NOTHING_SEEN


_lock = threading.Lock()
_live: dict[str, FormCounts] = {name: FormCounts() for name in FORMS}


def record_rewrite(form: str) -> None:
    with _lock:
        _live[form].matched += 1
        _live[form].rewritten += 1


def record_skip(form: str, reason: str) -> None:
    with _lock:
        _live[form].matched += 1
        _live[form].skipped[reason] += 1


def counters() -> LoweringCounters:
    """Counts since the last :func:`reset_counters` (or process start)."""
    with _lock:
        return LoweringCounters(
            {n: FormCounts(f.matched, f.rewritten, Counter(f.skipped)) for n, f in _live.items()}
        )


def reset_counters() -> None:
    with _lock:
        for name in FORMS:
            _live[name] = FormCounts()
