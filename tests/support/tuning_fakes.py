"""A fake tunable backend: configs that change a pure-torch computation, plus broken ones.

Each config is a dict with a ``cost`` (the time the fake timer reports for it, in microseconds)
and optionally ``split_k`` (a correct result with a different fp32 summation order, as a real
split-K kernel would give), ``wrong`` (a plausible but wrong answer) or ``raises``.
"""

from __future__ import annotations

from typing import Optional

import torch

from hipbmm_inductor import tuning
from hipbmm_inductor.ops.reference import reference_hipb_mm_fp8, unshuffle_by_formula
from hipbmm_inductor.ops.registry import Availability, register_backend

DEFAULT = {"cost": 5.0}
FASTEST_CORRECT = {"cost": 3.0, "split_k": 2}
CANDIDATES = [
    {"cost": 4.0, "split_k": 4},
    FASTEST_CORRECT,
    {"cost": 1.0, "wrong": True},  # fastest of all, but wrong: must be rejected
    {"cost": 0.5, "raises": True},  # must be rejected
]


class FakeState:
    def __init__(self):
        self.last_cost = 0.0
        self.runs: list[dict] = []


STATE = FakeState()


def run(config: dict, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
    STATE.runs.append(config)
    STATE.last_cost = config["cost"]
    if config.get("raises"):
        raise RuntimeError("fake launch failure: out of shared memory")
    split = config.get("split_k", 1)
    if split == 1:
        out = reference_hipb_mm_fp8(A, B, scale_a, scale_b, bias, out_dtype)
    else:
        w = unshuffle_by_formula(B.t()).to(torch.float32)
        a = A.to(torch.float32)
        acc = sum(p @ q.t() for p, q in zip(a.chunk(split, dim=1), w.chunk(split, dim=1)))
        acc = acc * scale_a * scale_b
        if bias is not None:
            acc = acc + bias.to(torch.float32)
        out = acc.to(out_dtype)
    if config.get("wrong"):
        out = (out.float() * 1.25).to(out_dtype)  # e.g. a scale applied twice on some tiles
    return out


def fake_timer(fn, reps: int) -> list:
    """Reports each call's config ``cost`` instead of measuring: deterministic tuning decisions."""
    times = []
    for i in range(reps):
        fn(i)
        times.append(STATE.last_cost * 1e-6)
    return times


def choose(A, B, scale_a, scale_b, bias=None, out_dtype=torch.bfloat16, *, backend="fake_tune",
           candidates=CANDIDATES, default=DEFAULT, extra_key: str = "") -> dict:
    return tuning.choose(backend, A, B, scale_a, scale_b, bias, out_dtype, default=default,
                         candidates=lambda: list(candidates), run=run, extra_key=extra_key)


class FakeTunedBackend:
    """Registered as ``fake_tune`` so the CLI can tune it like the Triton or aiter backend."""

    name = "fake_tune"

    def availability(self, device: torch.device) -> Availability:
        return Availability(True, "test backend")

    def is_fast(self, device: torch.device) -> bool:
        return False

    def run(self, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        return run(choose(A, B, scale_a, scale_b, bias, out_dtype), A, B, scale_a, scale_b, bias, out_dtype)


def register() -> None:
    register_backend(FakeTunedBackend())


def inputs(M: int = 8, N: int = 64, K: int = 64, bias: Optional[torch.dtype] = None, seed: int = 0):
    from tests.support.inputs import make_case

    case = make_case(M, N, K, bias_dtype=bias, seed=seed)
    return case.A, case.B, case.scale_a, case.scale_b, case.bias, case.out_dtype
