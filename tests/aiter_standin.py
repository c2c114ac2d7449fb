"""A recording stand-in for AMD's ``aiter`` module, for machines without an MI3xx GPU.

Tests install an :class:`AiterStandIn` as ``sys.modules["aiter"]``. It exposes the three functions
the aiter backend uses, with aiter's signatures (aiter/ops/gradlib.py):

    hipb_create_extension()
    hipb_mm(mat1, mat2, solution_index, bias=None, out_dtype=None, scaleA=None, scaleB=None,
            scaleOut=None, bpreshuffle=None, use_gelu=None)
    hipb_findallsols(mat1, mat2, bias=None, out_dtype=None, scaleA=None, scaleB=None,
                     scaleC=None, bpreshuffle=False, use_gelu=False) -> list[int]

Each call is checked against the contract of SPEC section 1 as hipBLASLt would see it (a
:class:`ContractViolation`, an ``AssertionError``, names the broken rule; the backend never
catches it), recorded in :attr:`AiterStandIn.calls`, and answered with the reference math
(:func:`hipbmm_inductor.ops.reference.reference_hipb_mm_fp8`, which reads ``mat2`` through SPEC's
index formula: a weight that was not preshuffled gives a wrong answer, not an error).

What it simulates:

- ``arch``: ``gfx942`` (MI300) accepts only ``float8_e4m3fnuz``, ``gfx950`` (MI350) only
  ``float8_e4m3fn``; hipBLASLt has no kernels for the other flavour.
- ``no_solution(M, N, K)``: where it returns True, hipBLASLt's heuristic finds nothing: ``hipb_mm``
  with ``solution_index=-1`` raises aiter's ``TORCH_CHECK`` text and ``hipb_findallsols`` returns
  ``[]`` (what some hipBLASLt releases do on gfx950).
- ``solutions``: the algorithm indices ``hipb_findallsols`` lists; any other index ``>= 0`` fails
  as ``hipblaslt_ext::getAlgosFromIndex`` does.
"""

from __future__ import annotations

import threading
import time
import types
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from hipbmm_inductor.ops.reference import reference_hipb_mm_fp8

FP8_FOR_ARCH = {"gfx942": torch.float8_e4m3fnuz, "gfx950": torch.float8_e4m3fn}


class ContractViolation(AssertionError):
    """The caller broke the hipb_mm contract: a bug in the caller, never an expected outcome."""


@dataclass
class Call:
    fn: str
    M: int
    N: int
    K: int
    solution_index: Optional[int]
    mat1: torch.Tensor
    mat2: torch.Tensor
    bias: Optional[torch.Tensor]
    scaleA: torch.Tensor
    scaleB: torch.Tensor


class AiterStandIn(types.ModuleType):
    def __init__(
        self,
        arch: str = "gfx942",
        no_solution: Callable[[int, int, int], bool] = lambda M, N, K: False,
        solutions: tuple[int, ...] = (3, 7, 11),
        create_delay_s: float = 0.0,
    ) -> None:
        super().__init__("aiter")
        if arch not in FP8_FOR_ARCH:
            raise ValueError(f"AiterStandIn: arch must be one of {sorted(FP8_FOR_ARCH)}, got {arch!r}")
        self.__version__ = "0.0.0+standin"
        self.arch = arch
        self.no_solution = no_solution
        self.solutions = tuple(solutions)
        self.create_delay_s = create_delay_s  # widens the window in which a racy caller double-creates
        self.extension_creations = 0
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    # --- aiter's API ------------------------------------------------------------------------

    def hipb_create_extension(self) -> None:
        time.sleep(self.create_delay_s)
        with self._lock:
            self.extension_creations += 1

    def hipb_mm(self, mat1, mat2, solution_index, bias=None, out_dtype=None, scaleA=None, scaleB=None,
                scaleOut=None, bpreshuffle=None, use_gelu=None):
        M, N, K = self._check(mat1, mat2, bias, out_dtype, scaleA, scaleB, scaleOut, bpreshuffle, use_gelu)
        if isinstance(solution_index, bool) or not isinstance(solution_index, int):
            raise ContractViolation(f"solution_index must be a Python int, got {solution_index!r}")
        self._record("hipb_mm", M, N, K, solution_index, mat1, mat2, bias, scaleA, scaleB)
        if solution_index < 0:
            if self.no_solution(M, N, K):
                # aiter's TORCH_CHECK text (hipbsolgemm.cu); hipBLASLt's m is our N, its n our M.
                raise RuntimeError(
                    f"hipblasLtMatmulAlgoGetHeuristic found 0 valid solutions for NN (`{N}`, `{M}`, "
                    f"`{K}`), intype: {mat1.dtype}, outtype: {out_dtype}, bpreshuffle: 1"
                )
        elif solution_index not in self.solutions:
            raise RuntimeError(f"hipblaslt_ext::getAlgosFromIndex: no algorithm with index {solution_index}")
        return reference_hipb_mm_fp8(mat1, mat2, scaleA, scaleB, bias, out_dtype)

    def hipb_findallsols(self, mat1, mat2, bias=None, out_dtype=None, scaleA=None, scaleB=None,
                         scaleC=None, bpreshuffle=False, use_gelu=False):
        M, N, K = self._check(mat1, mat2, bias, out_dtype, scaleA, scaleB, scaleC, bpreshuffle, use_gelu)
        self._record("hipb_findallsols", M, N, K, None, mat1, mat2, bias, scaleA, scaleB)
        return [] if self.no_solution(M, N, K) else list(self.solutions)

    # --- the contract -----------------------------------------------------------------------

    def _record(self, fn, M, N, K, index, mat1, mat2, bias, scaleA, scaleB) -> None:
        with self._lock:
            self.calls.append(Call(fn, M, N, K, index, mat1, mat2, bias, scaleA, scaleB))

    def _check(self, mat1, mat2, bias, out_dtype, scaleA, scaleB, scaleOut, bpreshuffle, use_gelu):
        def need(cond, rule):
            if not cond:
                raise ContractViolation(rule)

        need(self.extension_creations > 0, "hipb_create_extension() must run before any GEMM")
        need(bpreshuffle is True, f"bpreshuffle must be True, got {bpreshuffle!r}")
        need(scaleOut is None, f"scaleOut must be None (no output scaling), got {scaleOut!r}")
        need(not use_gelu, f"use_gelu must be off, got {use_gelu!r}")
        need(out_dtype == torch.bfloat16, f"out_dtype must be torch.bfloat16 for rowwise fp8, got {out_dtype}")

        for name, t in (("mat1", mat1), ("mat2", mat2), ("scaleA", scaleA), ("scaleB", scaleB)):
            need(isinstance(t, torch.Tensor), f"{name} must be a tensor, got {type(t).__name__}")
            need(t.dim() == 2, f"{name} must be 2-D, got shape {tuple(t.shape)}")
        want = FP8_FOR_ARCH[self.arch]
        need(mat1.dtype == want, f"mat1 must be {want} on {self.arch}, got {mat1.dtype}")
        need(mat2.dtype == want, f"mat2 must be {want} on {self.arch}, got {mat2.dtype}")

        M, K = mat1.shape
        K2, N = mat2.shape
        need(K == K2, f"mat1 dim 1 must match mat2 dim 0: {tuple(mat1.shape)} x {tuple(mat2.shape)}")
        need(mat1.stride() == (K, 1), f"mat1 must be row-major, strides {(K, 1)}, got {mat1.stride()}")
        need(
            mat2.stride() == (1, K),
            f"mat2 must be the [K, N] view of the shuffled [N, K] weight, strides {(1, K)}, got {mat2.stride()}",
        )
        need(N >= 16 and N % 16 == 0, f"rowwise needs N >= 16 and N % 16 == 0, got N={N}")
        need(K % 32 == 0, f"the (16, 16) preshuffle needs K % 32 == 0, got K={K}")

        need(scaleA.dtype == torch.float32, f"scaleA must be float32, got {scaleA.dtype}")
        need(scaleB.dtype == torch.float32, f"scaleB must be float32, got {scaleB.dtype}")
        need(tuple(scaleA.shape) == (M, 1), f"scaleA must be [M, 1] = [{M}, 1], got {tuple(scaleA.shape)}")
        need(tuple(scaleB.shape) == (1, N), f"scaleB must be [1, N] = [1, {N}], got {tuple(scaleB.shape)}")
        need(scaleA.is_contiguous(), f"scaleA must be contiguous, strides {scaleA.stride()}")
        need(scaleB.is_contiguous(), f"scaleB must be contiguous, strides {scaleB.stride()}")

        if bias is not None:
            need(tuple(bias.shape) == (N,), f"bias must be [N] = [{N}], got {tuple(bias.shape)}")
            # aiter sets only the bias pointer: hipBLASLt reads it in the output type.
            need(bias.dtype == out_dtype, f"bias must be {out_dtype} (hipBLASLt reads it so), got {bias.dtype}")
            need(bias.is_contiguous(), f"bias must be contiguous, strides {bias.stride()}")
        devices = {t.device for t in (mat1, mat2, scaleA, scaleB, bias) if t is not None}
        need(len(devices) == 1, f"all tensors must be on one device, got {devices}")
        return M, N, K
