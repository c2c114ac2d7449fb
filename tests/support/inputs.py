"""Valid ``hipb_mm_fp8`` inputs built from a plain weight, so tests keep the unshuffled truth; the
float64 oracle, the error bound, and the check of a backend's output against both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

import hipbmm_inductor as hi
from hipbmm_inductor.ops.reference import reference_hipb_mm_fp8

FP8 = (torch.float8_e4m3fn, torch.float8_e4m3fnuz)


@dataclass
class Case:
    A: torch.Tensor
    W: torch.Tensor  # the plain [N, K] weight B was packed from
    B: torch.Tensor
    scale_a: torch.Tensor
    scale_b: torch.Tensor
    bias: Optional[torch.Tensor]
    out_dtype: torch.dtype = torch.bfloat16

    @property
    def args(self):
        return (self.A, self.B, self.scale_a, self.scale_b, self.bias, self.out_dtype)


def make_case(
    M: int,
    N: int,
    K: int,
    fp8: torch.dtype = torch.float8_e4m3fn,
    bias_dtype: Optional[torch.dtype] = torch.bfloat16,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Case:
    g = torch.Generator().manual_seed(seed)
    # Values spread over the fp8 range (|x| up to ~8) with random signs: the product then
    # exercises rounding, not just small integers.
    A = (torch.randn(M, K, generator=g) * 2).to(fp8)
    W = (torch.randn(N, K, generator=g) * 2).to(fp8)
    scale_a = torch.rand(M, 1, generator=g) * 0.02 + 0.001
    scale_b = torch.rand(1, N, generator=g) * 0.02 + 0.001
    bias = None if bias_dtype is None else torch.randn(N, generator=g).to(bias_dtype)
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    W = W.to(device)
    return Case(to(A), W, hi.prepack_weight(W), to(scale_a), to(scale_b), to(bias))


def float64_oracle(case: Case) -> torch.Tensor:
    """The op's math in float64 from the *plain* weight: independent of every layout routine."""
    acc = case.A.double() @ case.W.double().t()
    out = acc * case.scale_a.double() * case.scale_b.double()
    if case.bias is not None:
        out = out + case.bias.double()
    return out


def error_bound(case: Case) -> torch.Tensor:
    """Elementwise bound on |op - float64 truth| for a bf16 result of an fp32-accumulated GEMM.

    - bf16 keeps 8 significant bits: rounding the exact value costs at most half an ulp, i.e.
      2^-8 relative. We allow 2^-7 (one ulp): the fp32 value being rounded is itself slightly off,
      and can land on the other side of a rounding boundary.
    - fp32 accumulation of K products: |error| <= K * 2^-24 * sum_k |a_k w_k| (the standard
      gamma_K bound), scaled by the scales; the epilogue adds a few fp32 roundings (2^-22 relative).
    The fp8 inputs are exact: they are the inputs, not approximations of them.
    """
    absacc = case.A.double().abs() @ case.W.double().abs().t()
    K = case.A.shape[1]
    scale = case.scale_a.double() * case.scale_b.double()
    accum = K * 2.0**-24 * absacc * scale
    ref = float64_oracle(case)
    return 2.0**-7 * ref.abs() + accum + 2.0**-22 * (absacc * scale + (0 if case.bias is None else case.bias.double().abs())) + 1e-30


def tensor_core_accumulation(case: Case) -> torch.Tensor | float:
    """Extra error of fp8 tensor cores: inside one promotion interval (BLOCK_K products) Hopper's
    fp8 MMA keeps about 14 bits of the running sum, not fp32's 24 (DeepSeek-V3 report, section
    3.3.2; seen here: M=33, N=K=32 was 4 bf16 ulps off on a value that cancelled to ~1e-6).
    The kernel promotes to fp32 every BLOCK_K, so the error is about 2^-14 of the sum of |products|;
    the bound allows 2^-13, one bit of margin: on the H200, M=100 N=4096 K=256 (promoted and fast
    alike) had one element of 409,600 at 1.03x the 2^-14 figure, on a value that cancelled to 2e-6.
    Zero on the CPU interpreter (numpy fp32) and on the fp16-widening path (fp32 accumulate)."""
    if case.A.device.type != "cuda":
        return 0.0
    absacc = case.A.double().abs() @ case.W.double().abs().t()
    return 2.0**-13 * absacc * case.scale_a.double() * case.scale_b.double()


def assert_close_to_truth(out: torch.Tensor, case: Case, what: str) -> None:
    """``out`` within :func:`inputs.error_bound` of float64 truth, and close to the reference backend.

    Runs on the case's device (float64 on the GPU for the suite shapes).
    """
    assert out.shape == (case.A.shape[0], case.B.shape[1]) and out.dtype == torch.bfloat16, what
    assert out.is_contiguous(), what
    assert torch.isfinite(out).all(), f"{what}: non-finite output"
    err = (out.double() - float64_oracle(case)).abs()
    bound = error_bound(case) + tensor_core_accumulation(case)
    bad = err > bound
    if bad.any():
        at = tuple(bad.nonzero()[0].tolist())
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} outside the bf16 + fp32-accumulation error "
            f"bound; first at {at}: got {out[at].item()}, err {err[at].item():.3g} > bound {bound[at].item():.3g}"
        )
    # The reference backend obeys the same bound, so the two differ by at most twice of it.
    ref = reference_hipb_mm_fp8(*case.args)
    assert ((out.double() - ref.double()).abs() <= 2 * bound).all(), f"{what}: too far from the reference backend"

