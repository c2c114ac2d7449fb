"""A recording stand-in for AMD's ``aiter`` module, for machines without an MI3xx GPU.

Tests install an :class:`AiterStandIn` as ``sys.modules["aiter"]``. It exposes the three functions
the aiter backend uses, with aiter's signatures (aiter/ops/gradlib.py):

    hipb_create_extension()
    hipb_mm(mat1, mat2, solution_index, bias=None, out_dtype=None, scaleA=None, scaleB=None,
            scaleOut=None, bpreshuffle=None, use_gelu=None)
    hipb_findallsols(mat1, mat2, bias=None, out_dtype=None, scaleA=None, scaleB=None,
                     scaleC=None, bpreshuffle=False, use_gelu=False) -> list[int]

Each call is checked against hipb_mm's contract as hipBLASLt would see it (a
:class:`ContractViolation`, an ``AssertionError``, names the broken rule; the backend never
catches it), recorded in :attr:`AiterStandIn.calls`, and answered with the reference math
(:func:`hipbmm_inductor.ops.reference.reference_hipb_mm_fp8`, which reads ``mat2`` through the
preshuffle index formula: a weight that was not preshuffled gives a wrong answer, not an error).

What it simulates, each as aiter's ``gradlib/csrc/hipbsolgemm.cu`` does it:

- ``arch``: ``gfx942`` (MI300) accepts only ``float8_e4m3fnuz``, ``gfx950`` (MI350) only
  ``float8_e4m3fn``; hipBLASLt has no kernels for the other flavour.
- **The extension is process-global and re-created on every call.** ``hipb_create_extension()``
  creates a new hipBLASLt handle and ``hipMalloc``s a new 256 MiB workspace each time, never
  freeing the previous ones: :attr:`extensions` lists every creation, :attr:`workspace_bytes`
  adds them up. A GEMM before the first creation is a :class:`ContractViolation`.
- ``no_solution(M, N, K)``: where it returns True, hipBLASLt's heuristic finds nothing:
  ``hipb_mm`` with ``solution_index=-1`` raises aiter's ``TORCH_CHECK`` text (a catchable
  ``RuntimeError``, the only one) and ``hipb_findallsols`` returns ``[]`` (what some hipBLASLt
  releases do on gfx950).
- ``solutions``: the algorithm indices ``hipb_findallsols`` lists, a tuple or a function of
  ``(M, N, K)`` (support can depend on M). **Any other index ``>= 0`` ends the process**: aiter
  wraps ``getAlgosFromIndex`` and ``hipblasLtMatmul`` in ``CHECK_HIPBLAS_ERROR``, which calls
  ``exit(EXIT_FAILURE)``. Modelled as :class:`SystemExit`; after it, every further call is a
  :class:`ContractViolation` (a real process would be gone), so a caller that swallows the exit
  still fails the test.
- **``HIP_ONLINE_TUNING`` overrides the caller's index.** aiter reads it with ``getenv`` on every
  GEMM (on when exactly ``1`` or ``true``) and, when on, for hipBLASLt's ``n`` (our M) <= 512 and
  more than 128 MiB free (:attr:`free_bytes`), replaces ``solution_index`` with the entry of its
  CSV for the exact (M, N, K, dtypes) or, without one, -1, then tunes inline and appends the
  winner (:attr:`online_csv`, :attr:`online_tunings`). With no solution at all that inline
  tuning indexes past its empty results: modelled as an exit too.
- ``zero_work_out``: a preallocated tensor that ``hipb_mm`` returns at once, with no checks, no
  recording and no math (what ``benchmarks/aiter_overhead.py`` times the Python around).
"""

from __future__ import annotations

import os
import threading
import time
import types
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

from hipbmm_inductor.ops.reference import reference_hipb_mm_fp8

FP8_FOR_ARCH = {"gfx942": torch.float8_e4m3fnuz, "gfx950": torch.float8_e4m3fn}

# hipbsolgemm.cu: `size_t workspace_size = 2 * 128 * 1024 * 1024;`, hipMalloc'ed per creation.
WORKSPACE_BYTES = 2 * 128 * 1024 * 1024
# hipbsolgemm.cu: online tuning only for hipBLASLt's n (the token count) <= decode_max_n ...
ONLINE_TUNING_MAX_M = 512
# ... and only while more than this much device memory is free.
ONLINE_TUNING_MIN_FREE_BYTES = 128 * 1024 * 1024

Solutions = Union[tuple, list, Callable[[int, int, int], "tuple[int, ...]"]]


class ContractViolation(AssertionError):
    """The caller broke the hipb_mm contract: a bug in the caller, never an expected outcome."""


@dataclass
class Call:
    fn: str
    M: int
    N: int
    K: int
    solution_index: Optional[int]  # what the caller passed
    mat1: torch.Tensor
    mat2: torch.Tensor
    bias: Optional[torch.Tensor]
    scaleA: torch.Tensor
    scaleB: torch.Tensor
    used_index: Optional[int] = None  # what hipBLASLt ran: -1 = its heuristic (hipb_mm only)


@dataclass
class Extension:
    """One hipb_create_extension(): a hipBLASLt handle and its workspace, on one device."""

    handle: int
    workspace_bytes: int
    device: int


class AiterStandIn(types.ModuleType):
    def __init__(
        self,
        arch: str = "gfx942",
        no_solution: Callable[[int, int, int], bool] = lambda M, N, K: False,
        solutions: Solutions = (3, 7, 11),
        create_delay_s: float = 0.0,
        free_bytes: int = 64 << 30,
        zero_work_out: Optional[torch.Tensor] = None,
    ) -> None:
        super().__init__("aiter")
        if arch not in FP8_FOR_ARCH:
            raise ValueError(f"AiterStandIn: arch must be one of {sorted(FP8_FOR_ARCH)}, got {arch!r}")
        self.__version__ = "0.0.0+standin"
        self.arch = arch
        self.no_solution = no_solution
        self.solutions = solutions
        self.create_delay_s = create_delay_s  # widens the window in which a racy caller double-creates
        self.free_bytes = free_bytes
        self.extensions: list[Extension] = []
        self.calls: list[Call] = []
        # aiter's ./hip_online_tuning_res.csv, in memory: (M, N, K, dtype, bias?) -> algo index.
        self.online_csv: dict[tuple, int] = {}
        self.online_tunings: list[tuple[int, int, int]] = []
        self.exited: Optional[str] = None  # why the simulated process ended
        self._lock = threading.Lock()
        if zero_work_out is not None:
            out = zero_work_out

            def hipb_mm(mat1, mat2, solution_index, bias=None, out_dtype=None, scaleA=None, scaleB=None,
                        scaleOut=None, bpreshuffle=None, use_gelu=None):
                return out

            self.hipb_mm = hipb_mm  # shadows the checking method below

    # --- what tests read --------------------------------------------------------------------

    @property
    def extension_creations(self) -> int:
        return len(self.extensions)

    @property
    def workspace_bytes(self) -> int:
        """Device memory the extensions hold: aiter frees none of the earlier ones."""
        return sum(e.workspace_bytes for e in self.extensions)

    def listed(self, M: int, N: int, K: int) -> tuple[int, ...]:
        """What hipb_findallsols lists for this problem (empty where there is no solution)."""
        if self.no_solution(M, N, K):
            return ()
        sols = self.solutions(M, N, K) if callable(self.solutions) else self.solutions
        return tuple(sols)

    # --- aiter's API ------------------------------------------------------------------------

    def hipb_create_extension(self) -> None:
        self._alive()
        time.sleep(self.create_delay_s)
        device = torch.cuda.current_device() if torch.cuda.is_available() else -1
        with self._lock:
            # hipblasLtCreate + hipMalloc(workspace_size): new ones every call; the old ones leak.
            self.extensions.append(Extension(len(self.extensions) + 1, WORKSPACE_BYTES, device))

    def hipb_mm(self, mat1, mat2, solution_index, bias=None, out_dtype=None, scaleA=None, scaleB=None,
                scaleOut=None, bpreshuffle=None, use_gelu=None):
        M, N, K = self._check(mat1, mat2, bias, out_dtype, scaleA, scaleB, scaleOut, bpreshuffle, use_gelu)
        if isinstance(solution_index, bool) or not isinstance(solution_index, int):
            raise ContractViolation(f"solution_index must be a Python int, got {solution_index!r}")
        call = self._record("hipb_mm", M, N, K, solution_index, mat1, mat2, bias, scaleA, scaleB)
        index = solution_index
        # NOTE: read from the process environment on every call, as aiter's std::getenv is: a
        # Python override of the variable would not reach the C++ side.
        online = os.environ.get("HIP_ONLINE_TUNING") in ("1", "true") and self.free_bytes > ONLINE_TUNING_MIN_FREE_BYTES
        csv_key = (M, N, K, mat1.dtype, bias is not None)
        if online and M <= ONLINE_TUNING_MAX_M:
            index = self.online_csv.get(csv_key, -1)  # the caller's index is discarded
        if index < 0:
            if online and M <= ONLINE_TUNING_MAX_M:
                listed = self.listed(M, N, K)
                if not listed:
                    self._exit("online tuning found no candidates and indexed past its results")
                index = max(listed)  # the stand-in's "fastest": any listed one computes the same
                with self._lock:
                    self.online_csv[csv_key] = index
                    self.online_tunings.append((M, N, K))
            elif self.no_solution(M, N, K):
                # aiter's TORCH_CHECK text (hipbsolgemm.cu); hipBLASLt's m is our N, its n our M.
                raise RuntimeError(
                    f"hipblasLtMatmulAlgoGetHeuristic found 0 valid solutions for NN (`{N}`, `{M}`, "
                    f"`{K}`), intype: {mat1.dtype}, outtype: {out_dtype}, bpreshuffle: 1"
                )
        elif index not in self.listed(M, N, K):
            self._exit(f"hipBLASLt error: solution index {index} is not valid for M={M}, N={N}, K={K}")
        call.used_index = index
        return reference_hipb_mm_fp8(mat1, mat2, scaleA, scaleB, bias, out_dtype)

    def hipb_findallsols(self, mat1, mat2, bias=None, out_dtype=None, scaleA=None, scaleB=None,
                         scaleC=None, bpreshuffle=False, use_gelu=False):
        M, N, K = self._check(mat1, mat2, bias, out_dtype, scaleA, scaleB, scaleC, bpreshuffle, use_gelu)
        self._record("hipb_findallsols", M, N, K, None, mat1, mat2, bias, scaleA, scaleB)
        return list(self.listed(M, N, K))

    # --- the contract -----------------------------------------------------------------------

    def _alive(self) -> None:
        if self.exited is not None:
            raise ContractViolation(f"the process exited at an earlier call ({self.exited}); nothing runs after exit()")

    def _exit(self, why: str):
        # CHECK_HIPBLAS_ERROR: fprintf(stderr, ...); exit(EXIT_FAILURE);
        self.exited = why
        raise SystemExit(f"aiter stand-in: exit(EXIT_FAILURE): {why}")

    def _record(self, fn, M, N, K, index, mat1, mat2, bias, scaleA, scaleB) -> Call:
        call = Call(fn, M, N, K, index, mat1, mat2, bias, scaleA, scaleB)
        with self._lock:
            self.calls.append(call)
        return call

    def _check(self, mat1, mat2, bias, out_dtype, scaleA, scaleB, scaleOut, bpreshuffle, use_gelu):
        def need(cond, rule):
            if not cond:
                raise ContractViolation(rule)

        self._alive()
        need(self.extensions, "hipb_create_extension() must run before any GEMM")
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
