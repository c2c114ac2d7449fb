"""The ``aiter`` backend: AMD's hipBLASLt preshuffled FP8 GEMM through ``aiter.hipb_mm``.

    out = aiter.hipb_mm(A, B, solution_index, bias=bias, out_dtype=torch.bfloat16,
                        scaleA=scale_a, scaleB=scale_b, scaleOut=None, bpreshuffle=True)

with ``B`` the ``[K, N]`` strided view of the shuffled weight (never made contiguous),
``scale_a`` fp32 ``[M, 1]`` and ``scale_b`` fp32 ``[1, N]``, both contiguous: exactly what vLLM's
``AiterHipbMMPerTokenFp8ScaledMMLinearKernel`` passes. The validated op arguments already have
that form, so this module only adds what hipBLASLt itself needs, and keeps hipBLASLt's contract
as aiter's ``gradlib/csrc/hipbsolgemm.cu`` implements it:

1. **Gating** (:meth:`AiterBackend.availability`; the switches and the import in
   :mod:`.aiter_gating`): a ROCm build of PyTorch, an MI300/MI350 GPU
   (gfx942/gfx950), ``aiter`` importable with ``hipb_mm``, and the user's switches: vLLM's three
   ``VLLM_ROCM_USE_AITER*`` flags when running under vLLM, ``HIPBMM_USE_AITER`` otherwise. Every
   failed check contributes its own reason.
2. **The fp8 flavour of the GPU**: gfx942 computes in ``float8_e4m3fnuz``, gfx950 in OCP
   ``float8_e4m3fn``; the other flavour is a clear error, not a reinterpretation of the bits.
3. **One extension per process.** ``aiter.hipb_create_extension()`` creates a new hipBLASLt
   handle and allocates a new 256 MiB workspace on every call (freeing none), and both are
   process globals bound to the device current at creation. It runs once, under a lock, before
   the first GEMM; a second device in the same process is served by the next backend of the
   ``auto`` order (or refused when ``aiter`` was named): one process per GPU, as vLLM runs.
4. **A probe per shape class**: some hipBLASLt releases on gfx950 have no solution at all for
   the preshuffled fp8 layout ("found 0 valid solutions", the one hipBLASLt failure aiter raises
   as a catchable error). The first call of each (N, K, dtypes, bias, device) asks with
   ``solution_index=-1``; a class without a solution is served by the next backend of the
   ``auto`` order (logged once), or raises :class:`BackendUnavailableError` when the user named
   ``aiter`` explicitly.
5. **Solution indices only from ``hipb_findallsols``** (the policy: :mod:`.aiter_solutions`).
   Every other hipBLASLt failure calls ``exit()``: an index hipBLASLt does not know, or one it
   cannot run at this M, ends the process and cannot be tried and caught. So an index other than -1 (hipBLASLt's heuristic) comes from
   :func:`hipbmm_inductor.tuning.choose` (candidates: ``hipb_findallsols`` of the running
   hipBLASLt; results keyed by its version), and is passed only after ``hipb_findallsols`` listed
   it for the call's exact M; otherwise -1 runs, with one warning. Without a known hipBLASLt
   version (or a ``hipb_findallsols`` with ``bpreshuffle``) no index is tuned or used.
6. **aiter's own online tuning wins where it applies.** With ``HIP_ONLINE_TUNING`` set to ``1``
   or ``true``, aiter replaces the caller's index with its CSV's (or tunes inline) for every
   M <= 512, reading the variable on each call. There the backend passes -1 and neither tunes
   nor looks up an index of its own (one warning); above 512 the tuned index runs.

**The per-call path** is a plan lookup and the call. Everything that depends only on (device,
fp8 dtype, N, K, bias dtype, out dtype, M bucket) is resolved once into a :class:`_Plan`: the
aiter function, the extension, the fp8-flavour check, the probe, the tuner's answer and whether
aiter's online tuning overrides it (an environment read, snapshotted). A plan is rebuilt after
:func:`invalidate_plans` (called when ``tuning.rocm_online`` changes ``HIP_ONLINE_TUNING``, when a
shape class loses its solution, and by whoever changes the snapshotted settings), when the tuner
is replaced (``tuning.reload``, ``set_cache_dir``) or changes mode (``set_mode``), and while
``tuning.forcing()`` re-tunes. ``benchmarks/aiter_overhead.py`` measures what the path costs.

NOTE: nothing here has run on AMD hardware in this project's own tests. The tests drive this
module against a recording stand-in for ``aiter`` (``tests/support/aiter_standin.py``) that checks every
argument against the contract above, models the exits, the per-call extension and the online
tuning override, and computes the result with the reference math.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from typing import Optional

import torch

from hipbmm_inductor import envs, hardware, tuning
from hipbmm_inductor.tuning import rocm_online
from hipbmm_inductor.tuning.key import library_versions

from . import registry
from .aiter_gating import aiter_installed, import_aiter, switch_reason
from .aiter_solutions import HEURISTIC, ONLINE_TUNING_MAX_M, Solutions
from .errors import BackendUnavailableError, HipbmmInputError
from .registry import Availability, register_backend

__all__ = [
    "AiterBackend",
    "MI3XX_ARCHS",
    "NO_SOLUTION_MESSAGE",
    "ONLINE_TUNING_MAX_M",
    "invalidate_plans",
]

log = logging.getLogger("hipbmm_inductor")

# The GPUs with hipBLASLt's preshuffled fp8 kernels; the flavour each reads is hardware.fp8_for_arch's.
MI3XX_ARCHS = ("gfx942", "gfx950")
_ARCH_NAMES = {"gfx942": "MI300", "gfx950": "MI350"}

# What aiter's hipb_mm raises (TORCH_CHECK -> RuntimeError) when hipBLASLt's heuristic returns no
# algorithm for the problem; the text is stable across aiter releases that have bpreshuffle.
NO_SOLUTION_MESSAGE = "found 0 valid solutions"


# --- platform queries ----------------------------------------------------------------------
# Names of this module so that tests simulate an MI3xx GPU for this backend alone: patching
# hardware's own functions would also reach the tuning keys and routing of every other module.
_is_rocm_build = hardware.is_rocm
_gpu_arch = hardware.arch


def _device_key(device: torch.device) -> tuple[str, int]:
    if device.type == "cuda" and device.index is None:
        return (device.type, torch.cuda.current_device())
    return (device.type, -1 if device.index is None else device.index)


def _on_device(device: torch.device):
    # hipb_create_extension binds the handle to the current device.
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _describe(shape_class) -> str:
    n, k, dtype, bias_dtype, (dev_type, index) = shape_class
    return f"hipBLASLt has no preshuffled fp8 solution for N={n}, K={k}, {dtype}, bias {bias_dtype} on {_where((dev_type, index))}"


def _where(device_key: tuple[str, int]) -> str:
    dev_type, index = device_key
    return dev_type if index < 0 else f"{dev_type}:{index}"


def _hipblaslt_version() -> Optional[str]:
    """The running hipBLASLt's version, as the tuning key records it (``None``: unknown)."""
    return dict(library_versions()).get("hipblaslt")


# --- once per process: aiter's hipBLASLt extension ------------------------------------------

class _ProcessExtension:
    """aiter's hipBLASLt handle and workspace: process globals in aiter, so created once here.

    Keyed by the aiter module object: a process has one, and a test that installs a fresh
    stand-in gets a fresh "process".
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.module = None  # the aiter module the extension was created in
        self.device: Optional[tuple[str, int]] = None  # the device it is bound to

    def other_device(self, aiter, device: torch.device) -> Optional[tuple[str, int]]:
        """The device the extension is bound to, when it is not ``device``'s (else ``None``)."""
        if self.module is aiter and self.device != _device_key(device):
            return self.device
        return None

    def ensure(self, aiter, device: torch.device) -> Optional[tuple[str, int]]:
        """Create the extension on ``device`` unless it exists; return ``other_device``."""
        key = _device_key(device)
        with self.lock:
            if self.module is not aiter:
                # aiter's hipb_mm reads HIP_ONLINE_TUNING on every call; forward the user's
                # request before the first one (a later os.environ write could race a GEMM
                # thread's getenv).
                rocm_online.forward_hip_online_tuning()
                with _on_device(device):
                    aiter.hipb_create_extension()
                self.module, self.device = aiter, key
                log.debug("aiter: created the hipBLASLt extension (handle + 256 MiB workspace) on %s", device)
        return self.other_device(aiter, device)


_EXTENSION = _ProcessExtension()


# --- the launch plan -------------------------------------------------------------------------

# Bumped by invalidate_plans(): a plan built under an older generation is rebuilt on its next call.
_generation = 0

def invalidate_plans() -> None:
    """Rebuild every aiter launch plan on its next call (settings they snapshot have changed)."""
    global _generation
    _generation += 1


class _Plan:
    """What one (device, fp8 dtype, N, K, bias dtype, out dtype, M bucket) calls with."""

    __slots__ = ("hipb_mm", "cast_bias", "index_for_m", "tuned_index", "fallback", "shape_class",
                 "generation", "tuner", "mode")

    def __init__(self, *, hipb_mm=None, cast_bias=False, tuned_index=-1, fallback=None, shape_class=None):
        self.hipb_mm = hipb_mm
        self.cast_bias = cast_bias  # an fp32 bias is rounded to the output type first
        self.tuned_index = tuned_index
        # M -> the index to pass at that M; None when the plan passes -1 at every M.
        self.index_for_m: Optional[dict[int, int]] = {} if tuned_index >= 0 else None
        self.fallback = fallback  # why another backend serves this plan (None: aiter does)
        self.shape_class = shape_class
        self.generation = _generation
        self.tuner = tuning.tuner()
        self.mode = self.tuner.mode


class AiterBackend:
    """hipBLASLt preshuffled FP8 GEMM via ``aiter.hipb_mm``; see the module docstring."""

    name = "aiter"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict[tuple, _Plan] = {}
        self._aiter = None  # the module the caches below were filled from
        # shape class -> True (hipBLASLt has a solution) / False (it has none: fall back)
        self._has_solution: dict[tuple, bool] = {}
        self._warned: set[tuple] = set()
        # Readable by users: hipb_mm calls, probes, shape classes without a solution, fallbacks,
        # plans built, tuned indices hipb_findallsols did not list at a call's M.
        self.counters: Counter[str] = Counter()
        self._solutions = Solutions(self._warn_once, self.counters)

    # --- gating ---------------------------------------------------------------------------

    def availability(self, device: torch.device) -> Availability:
        device = torch.device(device)
        reasons = []
        rocm = _is_rocm_build()
        if not rocm:
            reasons.append(f"PyTorch {torch.__version__} is not a ROCm build (torch.version.hip is None)")
        if device.type != "cuda":
            reasons.append(f"device {device} is not a GPU")
        elif rocm:
            arch = _gpu_arch(device)
            if arch is None:
                reasons.append(f"no ROCm GPU is visible for {device}")
            elif arch not in MI3XX_ARCHS:
                reasons.append(
                    f"GPU architecture {arch} is not MI300 (gfx942) or MI350 (gfx950), the only "
                    f"ones with hipBLASLt's preshuffled fp8 kernels"
                )
        aiter = None
        if rocm:
            aiter, why = import_aiter()
            if why:
                reasons.append(why)
        elif not aiter_installed():
            # Off ROCm, importing a real aiter could JIT-compile or crash: only look whether it exists.
            reasons.append("aiter is not installed")
        if aiter is not None:
            bound = _EXTENSION.other_device(aiter, device)
            if bound is not None:
                reasons.append(_other_device_reason(bound, device))
        switch = switch_reason()
        if switch:
            reasons.append(switch)
        if reasons:
            return Availability(False, "; ".join(reasons))
        return Availability(True, f"aiter hipb_mm on {_ARCH_NAMES[_gpu_arch(device)]} ({_gpu_arch(device)})")

    def is_fast(self, device: torch.device) -> bool:
        # hipBLASLt's preshuffled kernels are AMD's own fastest FP8 GEMM on MI3xx: the path vLLM
        # picks there when its aiter switches are on.
        return _is_rocm_build() and _gpu_arch(torch.device(device)) in MI3XX_ARCHS

    def is_fast_for(self, device: torch.device, n: int, k: int, m: int) -> bool:
        # Not measured per shape on MI3xx: the same answer for every shape.
        return self.is_fast(device)

    # --- the call ---------------------------------------------------------------------------

    def run(self, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        # NOTE: this is the hot path (benchmarks/aiter_overhead.py): a key from values already on
        # the tensors, one dict lookup, four identity/equality checks, the call. Everything else
        # is in _plan(), run once per plan.
        M = A.shape[0]
        K, N = B.shape
        key = (A.device, A.dtype, N, K, None if bias is None else bias.dtype, out_dtype,
               1 << (M - 1).bit_length() if M > 1 else 1)
        plan = self._plans.get(key)
        t = tuning._tuner  # a tuning.reload() replaces it; set_mode() changes its mode
        if plan is None or plan.generation != _generation or plan.tuner is not t or plan.mode != t.mode or t.force:
            return self._run_planning(key, A, B, scale_a, scale_b, bias, out_dtype)
        if plan.fallback is not None:
            return self._fallback(plan.fallback, A, B, scale_a, scale_b, bias, out_dtype)
        by_m = plan.index_for_m
        index = -1 if by_m is None else by_m.get(M)
        if index is None:
            index = self._index_at(plan, M, A, B, scale_a, scale_b, bias, out_dtype)
        return self._call(plan, index, A, B, scale_a, scale_b, bias, out_dtype)

    def _call(self, plan: _Plan, index: int, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        try:
            out = plan.hipb_mm(
                A, B, index,
                bias=bias.to(out_dtype) if plan.cast_bias else bias, out_dtype=out_dtype,
                scaleA=scale_a, scaleB=scale_b, scaleOut=None, bpreshuffle=True,
            )
        except RuntimeError as e:
            # The heuristic's answer can depend on M: a class that had a solution at the probe's
            # M may have none at this one.
            if NO_SOLUTION_MESSAGE not in str(e):
                raise
            self._mark_no_solution(plan.shape_class, str(e))
            return self._fallback(_describe(plan.shape_class), A, B, scale_a, scale_b, bias, out_dtype)
        self.counters["hipb_mm_calls"] += 1
        return out

    def _launch(self, aiter, config, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        """The tuner's runner: one GEMM with ``config`` on arguments whose bias is already cast."""
        return aiter.hipb_mm(
            A, B, config["solution_index"],
            bias=bias, out_dtype=out_dtype, scaleA=scale_a, scaleB=scale_b,
            scaleOut=None, bpreshuffle=True,
        )

    # --- once per plan ----------------------------------------------------------------------

    def _run_planning(self, key, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        plan, out, final = self._plan(A, B, scale_a, scale_b, bias, out_dtype)
        if final:
            self._plans[key] = plan
        if out is not None:  # the probe's GEMM already computed this call with the plan's index
            self.counters["hipb_mm_calls"] += 1
            return out
        if plan.fallback is not None:
            return self._fallback(plan.fallback, A, B, scale_a, scale_b, bias, out_dtype)
        index = -1 if plan.index_for_m is None else self._index_at(plan, A.shape[0], A, B, scale_a, scale_b,
                                                                    bias, out_dtype)
        return self._call(plan, index, A, B, scale_a, scale_b, bias, out_dtype)

    def _plan(self, A, B, scale_a, scale_b, bias, out_dtype) -> tuple[_Plan, Optional[torch.Tensor], bool]:
        """``(plan, output or None, final)``: the output when the probe computed this call, and
        whether the plan holds for later calls (not when online tuning had to wait)."""
        aiter, why = import_aiter()
        if aiter is None:
            raise BackendUnavailableError(f"the 'aiter' backend cannot run: {why}")
        if aiter is not self._aiter:  # a different aiter module (tests): forget what the old one said
            with self._lock:
                self._aiter = aiter
                self._has_solution.clear()
                self._solutions.clear()
                self._plans.clear()
        device = A.device
        self._check_fp8_flavour(A, device)
        self.counters["plans"] += 1
        M, K = A.shape
        N = B.shape[1]
        shape_class = (N, K, A.dtype, None if bias is None else bias.dtype, _device_key(device))

        bound = _EXTENSION.ensure(aiter, device)
        if bound is not None:
            return _Plan(fallback=_other_device_reason(bound, device), shape_class=shape_class), None, True

        cast_bias = bias is not None and bias.dtype != out_dtype
        # NOTE: aiter sets only HIPBLASLT_MATMUL_DESC_BIAS_POINTER, never the bias data type, so
        # hipBLASLt reads the bias in the output type (bf16): fp32 bias bytes would be read as
        # garbage. Rounding the bias to bf16 first costs at most 2^-9 of |bias|, no more than the
        # bf16 rounding of the output it is added to.
        args = (A, B, scale_a, scale_b, bias.to(out_dtype) if cast_bias else bias, out_dtype)
        # Snapshotted here, read on every call by aiter (see invalidate_plans for when it is re-read).
        vendor_tunes = M <= ONLINE_TUNING_MAX_M and bool(envs.HIP_ONLINE_TUNING)

        out = None
        has_solution = self._has_solution.get(shape_class)
        if has_solution is None:
            has_solution, out = self._probe(aiter, shape_class, args, vendor_tunes)
        if not has_solution:
            return _Plan(fallback=_describe(shape_class), shape_class=shape_class), None, True

        config, final = self._solutions.tuned_config(
            aiter, args, shape_class[4], vendor_tunes=vendor_tunes, hipblaslt_known=_hipblaslt_version() is not None,
            run=lambda cfg, *run_args: self._launch(aiter, cfg, *run_args))
        index = self._solutions.index_of(config, N, K, M)
        plan = _Plan(hipb_mm=aiter.hipb_mm, cast_bias=cast_bias, tuned_index=index, shape_class=shape_class)
        return plan, (out if index < 0 else None), final

    def _index_at(self, plan: _Plan, M: int, A, B, scale_a, scale_b, bias, out_dtype) -> int:
        """The index to pass at this M (:meth:`.aiter_solutions.Solutions.index_at`), decided once per M."""
        args = (A, B, scale_a, scale_b, bias.to(out_dtype) if plan.cast_bias else bias, out_dtype)
        index = plan.index_for_m[M] = self._solutions.index_at(self._aiter, plan.tuned_index, args,
                                                               plan.shape_class[4])
        return index

    # --- once per process / device / shape class --------------------------------------------

    def _check_fp8_flavour(self, A, device) -> None:
        arch = _gpu_arch(device)
        want = hardware.fp8_for_arch(arch) if arch in MI3XX_ARCHS else None
        if want is not None and A.dtype != want:
            raise HipbmmInputError(
                f"A: {_ARCH_NAMES[arch]} ({arch}) computes fp8 GEMMs in {want}, got {A.dtype}; "
                f"quantise activations and weights to {want} on this GPU"
            )

    def _probe(self, aiter, shape_class, args, vendor_tunes: bool) -> tuple[bool, Optional[torch.Tensor]]:
        """Whether hipBLASLt has a solution for this shape class (asked once), and the GEMM's
        output when asking computed it."""
        self.counters["probes"] += 1
        if vendor_tunes:
            # NOTE: aiter's inline tuning has no "0 solutions" check: with nothing to try it indexes
            # past its empty results (hipbsolgemm.cu, hipblasLt_online_tuning). Ask first.
            listed = self._solutions.listing(aiter, args, shape_class[4])
            if listed is not None and not listed:
                self._mark_no_solution(shape_class, "hipb_findallsols lists no solution")
                return False, None
        try:
            out = self._launch(aiter, HEURISTIC, *args)
        except RuntimeError as e:
            if NO_SOLUTION_MESSAGE not in str(e):
                raise
            self._mark_no_solution(shape_class, str(e))
            return False, None
        with self._lock:
            self._has_solution.setdefault(shape_class, True)
        return True, out

    def _mark_no_solution(self, shape_class, message: str) -> None:
        with self._lock:
            first = self._has_solution.get(shape_class) is not False
            self._has_solution[shape_class] = False
        if first:
            invalidate_plans()  # plans of this class for other M buckets still call hipb_mm
            self.counters["shape_classes_without_solution"] += 1
            if envs.HIPBMM_BACKEND != "aiter":
                log.warning(
                    "hipb_mm_fp8: %s (%s); serving it with the next backend of the auto order",
                    _describe(shape_class), message.splitlines()[0] if message else "",
                )

    def _warn_once(self, key: tuple, message: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _fallback(self, what: str, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        # Off the fast path on purpose: the environment is read here on each call, and the
        # backend that takes over costs far more than that read.
        if envs.HIPBMM_BACKEND == "aiter":
            raise BackendUnavailableError(
                f"HIPBMM_BACKEND=aiter: {what}; HIPBMM_BACKEND=auto serves such calls with the next backend"
            )
        order = registry.auto_order(A.device)
        after = order[order.index(self.name) + 1:] if self.name in order else order
        tried = []
        for name in after:
            av = registry.availability(name, A.device)
            if av:
                self.counters["fallback_calls"] += 1
                return registry.get_backend(name).run(A, B, scale_a, scale_b, bias, out_dtype)
            tried.append(f"{name}: {av.reason}")
        raise BackendUnavailableError(f"{what}, and no other backend can run: {'; '.join(tried)}")


def _other_device_reason(bound: tuple[str, int], device: torch.device) -> str:
    return (
        f"aiter's hipBLASLt extension is one per process and was created on {_where(bound)}, not "
        f"{_where(_device_key(device))} (run one process per GPU to use aiter on each)"
    )


rocm_online.add_listener(invalidate_plans)
register_backend(AiterBackend())
