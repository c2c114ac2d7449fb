"""What the aiter backend's tests share: the simulated platform's constants, the tolerance check,
a spy for ``tuning.choose``, and direct calls into the stand-in."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.support.inputs import error_bound, float64_oracle

ARCHS = ["gfx942", "gfx950"]
FP8 = {"gfx942": torch.float8_e4m3fnuz, "gfx950": torch.float8_e4m3fn}
GPU = torch.device("cuda", 0)
ROOT = Path(__file__).resolve().parents[2]
HIPBLASLT = "1.0.60300+standin"  # what the simulated platform reports as hipBLASLt's version


def check_close(out: torch.Tensor, case, extra=0.0) -> None:
    # fp8 inputs are exact; error_bound allows one bf16 ulp (2^-7 relative, since the fp32 value
    # being rounded is itself inexact) plus the fp32 accumulation bound; `extra` adds what the
    # backend itself rounds (an fp32 bias rounded to bf16: 2^-9 of |bias|).
    ref = float64_oracle(case)
    bound = error_bound(case) + extra
    err = (out.double() - ref).abs()
    bad = (err > bound).nonzero()
    assert bad.numel() == 0, (
        f"{bad.shape[0]} elements out of bound; first at {tuple(bad[0].tolist())}: "
        f"got {out[tuple(bad[0])].item()}, want {ref[tuple(bad[0])].item()}"
    )


class ChooseSpy:
    """Stands in for ``tuning.choose``: answers ``answer`` and counts the calls."""

    def __init__(self, answer: dict):
        self.answer = answer
        self.calls = 0

    def __call__(self, backend, A, B, scale_a, scale_b, bias, out_dtype, *, default, candidates, run, extra_key=""):
        self.calls += 1
        return self.answer


def direct(standin, case, index):
    """Call the stand-in as the backend would, with ``index``."""
    return standin.hipb_mm(case.A, case.B, index, bias=case.bias, out_dtype=torch.bfloat16,
                           scaleA=case.scale_a, scaleB=case.scale_b, scaleOut=None, bpreshuffle=True)


def gemms(standin):
    return [c for c in standin.calls if c.fn == "hipb_mm"]
