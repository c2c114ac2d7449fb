"""The ``aiter`` backend: AMD's hipBLASLt preshuffled FP8 GEMM through ``aiter.hipb_mm``.

    out = aiter.hipb_mm(A, B, solution_index, bias=bias, out_dtype=torch.bfloat16,
                        scaleA=scale_a, scaleB=scale_b, scaleOut=None, bpreshuffle=True)

with ``B`` the ``[K, N]`` strided view of the shuffled weight (never made contiguous),
``scale_a`` fp32 ``[M, 1]`` and ``scale_b`` fp32 ``[1, N]``, both contiguous: exactly what vLLM's
``AiterHipbMMPerTokenFp8ScaledMMLinearKernel`` passes (SPEC section 1). The validated op
arguments already have that form, so this module only adds what hipBLASLt itself needs:

1. **Gating** (:meth:`AiterBackend.availability`): a ROCm build of PyTorch, an MI300/MI350 GPU
   (gfx942/gfx950), ``aiter`` importable with ``hipb_mm``, and the user's switches: vLLM's three
   ``VLLM_ROCM_USE_AITER*`` flags when running under vLLM, ``HIPBMM_USE_AITER`` otherwise. Every
   failed check contributes its own reason.
2. **The fp8 flavour of the GPU**: gfx942 computes in ``float8_e4m3fnuz``, gfx950 in OCP
   ``float8_e4m3fn``; the other flavour is a clear error, not a reinterpretation of the bits.
3. **The hipBLASLt extension** (``aiter.hipb_create_extension()``: handle + 256 MiB workspace),
   created once per process and device before the first GEMM, under a lock.
4. **A probe per shape class**: some hipBLASLt releases on gfx950 have no solution at all for
   the preshuffled fp8 layout ("hipblasLtMatmulAlgoGetHeuristic found 0 valid solutions"). The
   first call of each (N, K, dtypes, bias, device) asks with ``solution_index=-1``; a shape class
   without a solution is served by the next backend of the ``auto`` order (logged once), or raises
   :class:`BackendUnavailableError` when the user named ``aiter`` explicitly.
5. **The solution index** comes from :func:`hipbmm_inductor.tuning.choose` (``-1``, hipBLASLt's
   own heuristic, unless the tuner has a better one); candidates are ``aiter.hipb_findallsols``.

NOTE: nothing here has run on AMD hardware in this project's own tests. The tests drive this
module against a recording stand-in for ``aiter`` (``tests/aiter_standin.py``) that checks every
argument against the contract above and computes the result with the reference math.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import sys
import threading
from collections import Counter
from typing import Optional

import torch

from hipbmm_inductor import envs, tuning

from . import registry
from .errors import BackendUnavailableError, HipbmmInputError
from .registry import Availability, register_backend

__all__ = ["AiterBackend", "FP8_FOR_ARCH", "MI3XX_ARCHS", "NO_SOLUTION_MESSAGE"]

log = logging.getLogger("hipbmm_inductor")

# The fp8 format each MI3xx generation's matrix cores read (SPEC section 1).
FP8_FOR_ARCH = {"gfx942": torch.float8_e4m3fnuz, "gfx950": torch.float8_e4m3fn}
MI3XX_ARCHS = tuple(FP8_FOR_ARCH)
_ARCH_NAMES = {"gfx942": "MI300", "gfx950": "MI350"}

# What aiter's hipb_mm raises (TORCH_CHECK -> RuntimeError) when hipBLASLt's heuristic returns no
# algorithm for the problem; the text is stable across aiter releases that have bpreshuffle.
NO_SOLUTION_MESSAGE = "found 0 valid solutions"

_VLLM_FLAGS = ("VLLM_ROCM_USE_AITER", "VLLM_ROCM_USE_AITER_LINEAR", "VLLM_ROCM_USE_AITER_LINEAR_HIPBMM")


# --- platform queries (module functions so that tests can simulate an MI3xx GPU) -------------

def _is_rocm_build() -> bool:
    return bool(torch.version.hip)


_ARCH_CACHE: dict[tuple[str, int], Optional[str]] = {}


def _gpu_arch(device: torch.device) -> Optional[str]:
    """``gfx942``-style architecture of a ROCm GPU, ``None`` where there is none.

    Memoised per device: ``run`` asks on every GEMM call (the fp8-flavour check), and a device's
    architecture does not change within a process.
    """
    if device.type != "cuda":
        return None
    key = _device_key(device)
    if key not in _ARCH_CACHE:
        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(device)
        # gcnArchName carries target features after a colon: "gfx942:sramecc+:xnack-".
        _ARCH_CACHE[key] = getattr(props, "gcnArchName", "").split(":")[0] or None
    return _ARCH_CACHE[key]


def _under_vllm() -> bool:
    """Whether this process runs vLLM: then vLLM's own aiter switches decide (SPEC section 4)."""
    return sys.modules.get("vllm") is not None


def _device_key(device: torch.device) -> tuple[str, int]:
    if device.type == "cuda" and device.index is None:
        return (device.type, torch.cuda.current_device())
    return (device.type, -1 if device.index is None else device.index)


def _on_device(device: torch.device):
    # hipb_create_extension binds the handle to the current device.
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _switch_reason() -> Optional[str]:
    """Why the user's switches keep aiter off (``None`` when they allow it)."""
    if _under_vllm():
        off = [name for name in _VLLM_FLAGS if not getattr(envs, name)]
        if off:
            return (
                "running under vLLM, whose switches for its hipBLASLt linear path are off ("
                + ", ".join(f"{name}=0" for name in off)
                + "; vLLM's default for VLLM_ROCM_USE_AITER is 0)"
            )
        return None
    if not envs.HIPBMM_USE_AITER:
        return "HIPBMM_USE_AITER=0"
    return None


def _aiter_installed() -> bool:
    if "aiter" in sys.modules:
        return sys.modules["aiter"] is not None
    try:
        return importlib.util.find_spec("aiter") is not None
    except (ImportError, ValueError):
        return False


def _import_aiter():
    """The ``aiter`` module, or the reason it cannot serve ``hipb_mm``."""
    try:
        aiter = importlib.import_module("aiter")
    except Exception as e:  # a broken build raises more than ImportError (JIT, missing .so)
        return None, f"aiter is not importable ({type(e).__name__}: {e})"
    missing = [f for f in ("hipb_mm", "hipb_create_extension") if not callable(getattr(aiter, f, None))]
    if missing:
        version = getattr(aiter, "__version__", "unknown version")
        return None, f"aiter ({version}) does not expose {', '.join(missing)}"
    return aiter, None


def _describe(shape_class) -> str:
    n, k, dtype, bias_dtype, (dev_type, index) = shape_class
    where = dev_type if index < 0 else f"{dev_type}:{index}"
    return f"hipBLASLt has no preshuffled fp8 solution for N={n}, K={k}, {dtype}, bias {bias_dtype} on {where}"


class AiterBackend:
    """hipBLASLt preshuffled FP8 GEMM via ``aiter.hipb_mm``; see the module docstring."""

    name = "aiter"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._extension_ready: set[tuple[str, int]] = set()
        # shape class -> True (hipBLASLt has a solution) / False (it has none: fall back)
        self._has_solution: dict[tuple, bool] = {}
        # Readable by users: hipb_mm calls, probes, shape classes without a solution, fallbacks.
        self.counters: Counter[str] = Counter()

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
        if rocm:
            _, why = _import_aiter()
            if why:
                reasons.append(why)
        elif not _aiter_installed():
            # Off ROCm, importing a real aiter could JIT-compile or crash: only look whether it exists.
            reasons.append("aiter is not installed")
        switch = _switch_reason()
        if switch:
            reasons.append(switch)
        if reasons:
            return Availability(False, "; ".join(reasons))
        return Availability(True, f"aiter hipb_mm on {_ARCH_NAMES[_gpu_arch(device)]} ({_gpu_arch(device)})")

    def is_fast(self, device: torch.device) -> bool:
        # hipBLASLt's preshuffled kernels are AMD's own fastest FP8 GEMM on MI3xx: the path vLLM
        # picks there when its aiter switches are on.
        return _is_rocm_build() and _gpu_arch(torch.device(device)) in MI3XX_ARCHS

    # --- the call ---------------------------------------------------------------------------

    def run(self, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        aiter, why = _import_aiter()
        if aiter is None:
            raise BackendUnavailableError(f"the 'aiter' backend cannot run: {why}")
        device = A.device
        self._check_fp8_flavour(A, device)
        shape_class = (B.shape[1], B.shape[0], A.dtype, None if bias is None else bias.dtype, _device_key(device))
        args = (A, B, scale_a, scale_b, bias, out_dtype)
        if bias is not None and bias.dtype != out_dtype:
            # NOTE: aiter sets only HIPBLASLT_MATMUL_DESC_BIAS_POINTER, never the bias data type,
            # so hipBLASLt reads the bias in the output type (bf16): fp32 bias bytes would be read
            # as garbage. Rounding the bias to bf16 first costs at most 2^-9 of |bias|, no more
            # than the bf16 rounding of the output it is added to.
            args = (A, B, scale_a, scale_b, bias.to(out_dtype), out_dtype)
        self._ensure_extension(aiter, device)

        has_solution = self._has_solution.get(shape_class)
        if has_solution is None:
            has_solution = self._probe(aiter, shape_class, args)
        if not has_solution:
            return self._fallback(shape_class, A, B, scale_a, scale_b, bias, out_dtype)

        config = tuning.choose(
            "aiter", *args,
            default={"solution_index": -1},
            candidates=lambda: self._candidates(aiter, *args),
            run=lambda cfg, *run_args: self._launch(aiter, cfg, *run_args),
        )
        try:
            out = self._launch(aiter, config, *args)
        except RuntimeError as e:
            # The heuristic's answer can depend on M: a class that had a solution at the probe's
            # M may have none at this one.
            if NO_SOLUTION_MESSAGE not in str(e):
                raise
            self._mark_no_solution(shape_class, str(e))
            return self._fallback(shape_class, A, B, scale_a, scale_b, bias, out_dtype)
        self.counters["hipb_mm_calls"] += 1
        return out

    def _launch(self, aiter, config, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        index = config["solution_index"]
        if isinstance(index, bool) or not isinstance(index, int):
            # The tuning cache is JSON: a float or string index is a corrupt entry, not a choice.
            raise TypeError(f"aiter config: solution_index must be an int, got {index!r}")
        return aiter.hipb_mm(
            A, B, index,
            bias=bias, out_dtype=out_dtype, scaleA=scale_a, scaleB=scale_b,
            scaleOut=None, bpreshuffle=True,
        )

    def _candidates(self, aiter, A, B, scale_a, scale_b, bias, out_dtype) -> list[dict]:
        findallsols = getattr(aiter, "hipb_findallsols", None)
        if findallsols is None:
            return []
        try:
            solutions = findallsols(
                A, B, bias=bias, out_dtype=out_dtype, scaleA=scale_a, scaleB=scale_b, bpreshuffle=True
            )
        except TypeError:
            # NOTE: aiter releases before bpreshuffle support take no bpreshuffle argument here; the
            # solutions they list are for the plain layout and would compute garbage on ours.
            log.info("aiter.hipb_findallsols has no bpreshuffle argument: hipBLASLt solutions are not tuned")
            return []
        return [{"solution_index": int(s)} for s in solutions]

    # --- once per process / device / shape class --------------------------------------------

    def _check_fp8_flavour(self, A, device) -> None:
        arch = _gpu_arch(device)
        want = FP8_FOR_ARCH.get(arch)
        if want is not None and A.dtype != want:
            raise HipbmmInputError(
                f"A: {_ARCH_NAMES[arch]} ({arch}) computes fp8 GEMMs in {want}, got {A.dtype}; "
                f"quantise activations and weights to {want} on this GPU"
            )

    def _ensure_extension(self, aiter, device) -> None:
        key = _device_key(device)
        if key in self._extension_ready:
            return
        with self._lock:
            if key in self._extension_ready:
                return
            # hipBLASLt reads HIP_ONLINE_TUNING when it initialises: forward it first, if asked.
            from hipbmm_inductor.tuning import vendor

            vendor.forward_hip_online_tuning()
            with _on_device(device):
                aiter.hipb_create_extension()
            vendor.note_hipblaslt_initialised()
            self._extension_ready.add(key)
            log.debug("aiter: created the hipBLASLt extension on %s", device)

    def _probe(self, aiter, shape_class, args) -> bool:
        """Whether hipBLASLt's heuristic has a solution for this shape class (asked once)."""
        self.counters["probes"] += 1
        try:
            self._launch(aiter, {"solution_index": -1}, *args)
        except RuntimeError as e:
            if NO_SOLUTION_MESSAGE not in str(e):
                raise
            self._mark_no_solution(shape_class, str(e))
            return False
        with self._lock:
            self._has_solution.setdefault(shape_class, True)
        return True

    def _mark_no_solution(self, shape_class, message: str) -> None:
        with self._lock:
            first = self._has_solution.get(shape_class) is not False
            self._has_solution[shape_class] = False
        if first:
            self.counters["shape_classes_without_solution"] += 1
            if envs.HIPBMM_BACKEND != "aiter":
                log.warning(
                    "hipb_mm_fp8: %s (%s); serving it with the next backend of the auto order",
                    _describe(shape_class), message.splitlines()[0] if message else "",
                )

    def _fallback(self, shape_class, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        what = f"{_describe(shape_class)} (seen on gfx950 with some hipBLASLt releases)"
        if envs.HIPBMM_BACKEND == "aiter":
            raise BackendUnavailableError(
                f"HIPBMM_BACKEND=aiter: {what}; HIPBMM_BACKEND=auto serves such shapes with the next backend"
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


register_backend(AiterBackend())
