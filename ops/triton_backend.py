"""The ``triton`` backend of ``hipb_mm_fp8``: :mod:`.triton_fp8_gemm` behind the registry.

Portable: it runs wherever Triton runs a GPU kernel (NVIDIA, ROCm), and on the CPU under
``TRITON_INTERPRET=1`` (how CI tests it). It reads the same preshuffled weights as aiter's
``hipb_mm``, so one prepacked model serves every backend.

The first call of each shape (device, fp8 dtype, N, K, M, bias dtype, accumulation mode, tuning
state) asks :func:`hipbmm_inductor.tuning.resolve` for its config (the per-(N, K, M bucket)
heuristic is the default, the config space the tuner's candidates) and builds a launch plan
(:mod:`.triton_plan`); every later call of that shape is a dict lookup and the plan's launch.
Triton is imported on first use, never at ``import hipbmm_inductor``: this module is imported to
probe availability on machines without Triton.
"""

from __future__ import annotations

import functools
import importlib.util
from collections import Counter

import torch

from hipbmm_inductor import envs, tuning

from .registry import Availability, register_backend
from .triton_configs import config_space, heuristic_config, m_bucket

__all__ = ["TritonBackend", "KERNEL_VERSION"]

# Part of the tuning key: bump when the kernel changes so that cached configs are re-tuned.
# v3: accumulation modes, A via TMA, the Gluon sm_90 kernel; v4: the Gluon kernel reads A in
# 8-row boxes below BLOCK_M and joins the M <= 16 space (split-K configs tuned at v3 lost to it).
KERNEL_VERSION = "preshuffled-v4"


# The accumulation mode changes numerics and the best config, and whether the sm_90 Gluon kernel
# can run here changes the candidates: each combination is tuned separately. Built once, not per
# GEMM call.
_EXTRA_KEYS = {
    (fast, hopper): f"{KERNEL_VERSION}/{'fast' if fast else 'promoted'}/{'gluon' if hopper else 'portable'}"
    for fast in (False, True) for hopper in (False, True)
}


def _current_device() -> int:
    return torch._C._cuda_getDevice()


# Launch plans kept (one per shape and exact M); past this many they are dropped and rebuilt.
PLAN_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=2)
def _tuner_run(fast: bool):
    from .triton_fp8_gemm import launch  # imports triton

    return functools.partial(launch, fast_accum=fast)


@functools.lru_cache(maxsize=None)
def _heuristic(bucket: int, N: int, K: int, fast_accum: bool = False, hopper: bool = False) -> dict:
    # Memoised: the heuristic is pure in (M bucket, N, K, mode, device kind), and M=1 decode
    # calls are host-bound, so every microsecond of Python on this path shows up in the step time.
    return heuristic_config(bucket, N, K, fast_accum, hopper)


class TritonBackend:
    name = "triton"

    def __init__(self) -> None:
        self._plans: dict[tuple, object] = {}
        self._plans_tuner = None

    def availability(self, device: torch.device) -> Availability:
        device = torch.device(device)
        if importlib.util.find_spec("triton") is None:
            return Availability(False, "triton is not installed (pip install 'hipbmm-inductor[triton]')")
        if device.type == "cpu":
            if envs.TRITON_INTERPRET:
                return Availability(True, "TRITON_INTERPRET=1: kernels run in Triton's CPU interpreter (slow)")
            return Availability(
                False, "Triton compiles for GPUs; on the CPU it runs only under TRITON_INTERPRET=1 (slow)"
            )
        if device.type != "cuda":
            return Availability(False, f"Triton has no backend for device type {device.type!r}")
        if not torch.cuda.is_available():
            return Availability(False, "torch.cuda.is_available() is False")
        if envs.TRITON_INTERPRET:
            return Availability(True, "TRITON_INTERPRET=1: kernels run in Triton's CPU interpreter (slow)")
        from .triton_fp8_gemm import device_arch, native_fp8

        arch = device_arch(device)
        if torch.version.hip:
            if not arch.startswith("gfx9"):
                return Availability(False, f"{arch}: the kernel targets CDNA (gfx9xx) matrix cores")
        else:
            major, _ = torch.cuda.get_device_capability(device)
            if major < 8:
                return Availability(False, f"{arch}: needs sm_80 or newer (fp16 tensor cores at least)")
        native = [str(d).removeprefix("torch.") for d in (torch.float8_e4m3fn, torch.float8_e4m3fnuz)
                  if native_fp8("cuda", arch, d)]
        how = (f"fp8 tensor cores for {', '.join(native)}; other flavours widened to fp16 in-kernel"
               if native else "no fp8 tensor cores: fp8 widened to fp16 in-kernel (exact, slower)")
        return Availability(True, f"{arch}: {how}")

    def is_fast(self, device: torch.device) -> bool:
        # NOTE: False everywhere, on purpose. H100, benchmarks/results/h100_suite.json and
        # h100_suite_repeat_*.json (Llama-3 8B/70B suite, CUDA graphs, vs torch._scaled_mm
        # rowwise timed in turns, promoted, six runs): geomean x1.212 on per-point medians
        # (runs x1.197-1.232), x1.44-1.50 at M <= 16, x1.04-1.08 at M = 256, x1.04-1.06 at
        # M >= 1024, no point below x0.9 on medians (one run had two power-limited prefill points
        # at x0.878 and x0.8997), but only with the sm_90 Gluon kernel on a validated Triton; the
        # portable kernel elsewhere (other GPUs, other Tritons) is slower than cuBLASLt above M = 64
        # (docs/benchmarks.md). And the win needs CUDA graphs: launched eagerly, a decode-sized
        # call costs ~70-200 us of host time against _scaled_mm's 20-60 us. Until `auto` can tell
        # those cases apart, the pass routes here only when the user names the backend
        # (HIPBMM_BACKEND=triton). ROCm: aiter's hipBLASLt is the vendor path and nothing here
        # has been measured against it yet.
        return False

    # -- the per-call path ------------------------------------------------------------------
    def run(self, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        M, K = A.shape
        N = B.shape[1]
        t = tuning._tuner or tuning.tuner()
        if t is not self._plans_tuner:  # tuning.reload(): a new cache folder or environment
            self.reset_plans()
            self._plans_tuner = t
        # The accumulation setting as given (an override or the environment's text): parsing it
        # through envs costs microseconds per call, so plans are keyed on the raw value and it is
        # parsed (and validated) when a plan is built.
        accumulation = envs.raw("HIPBMM_TRITON_ACCUMULATION")
        device = A.device
        key = (device, A.dtype, N, K, M, None if bias is None else bias.dtype, accumulation, t.mode, t.force)
        plan = self._plans.get(key)
        if device.type == "cuda" and device.index != _current_device():
            # Triton compiles for, and launches on the stream of, the current device.
            with torch.cuda.device(device):
                if plan is None:
                    return self._first_call(key, A, B, scale_a, scale_b, bias, out_dtype)
                return plan(A, B, scale_a, scale_b, bias)
        if plan is None:
            return self._first_call(key, A, B, scale_a, scale_b, bias, out_dtype)
        return plan(A, B, scale_a, scale_b, bias)

    def config_for(self, A, B, scale_a, scale_b, bias, out_dtype) -> tuple[dict, bool]:
        """``(config, fast_accum)`` this call launches with: a cached or tuned config for its
        tuning key, else the heuristic (what ``bench`` records beside each timing)."""
        fast = envs.HIPBMM_TRITON_ACCUMULATION == "fast"
        config, _ = self._resolve(A, B, scale_a, scale_b, bias, out_dtype, fast)
        if config.get("HOPPER", 0) and not self._hopper_usable(A, B):
            M, K = A.shape
            config = _heuristic(m_bucket(M), B.shape[1], K, fast, False)
        return config, fast

    def launch_stats(self) -> dict:
        """Plans built and why calls went through Triton's binder instead of a relaunch
        (``{"plans": n, "through_triton": {reason: calls}}``), summed over this process."""
        total: Counter = Counter()
        for plan in self._plans.values():
            total.update(plan.through_triton)
        return {"plans": len(self._plans), "through_triton": dict(total)}

    def reset_plans(self) -> None:
        """Forget every launch plan (the next call of each shape builds its plan again)."""
        self._plans.clear()

    # -- building plans ----------------------------------------------------------------------
    def _resolve(self, A, B, scale_a, scale_b, bias, out_dtype, fast: bool) -> tuple[dict, bool]:
        M, K = A.shape
        N = B.shape[1]
        hopper = self._hopper_usable(A, B)
        return tuning.resolve(
            "triton", A, B, scale_a, scale_b, bias, out_dtype,
            default=_heuristic(m_bucket(M), N, K, fast, hopper),
            candidates=lambda: config_space(M, N, K, fast, hopper),
            run=_tuner_run(fast),
            extra_key=_EXTRA_KEYS[fast, hopper],
        )

    @staticmethod
    def _hopper_usable(A, B) -> bool:
        from .triton_fp8_gemm import hopper_path  # imports triton

        return (A.device.type == "cuda" and not envs.TRITON_INTERPRET and hopper_path(A.device, A.dtype)
                and A.data_ptr() % 16 == 0 and B.data_ptr() % 16 == 0)

    def _first_call(self, key, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        from .triton_fp8_gemm import hopper_failed, launch, prepare  # imports triton
        from .triton_plan import HopperPlan, PortablePlan

        fast = envs.HIPBMM_TRITON_ACCUMULATION == "fast"  # raises, naming the variable, if invalid
        config, final = self._resolve(A, B, scale_a, scale_b, bias, out_dtype, fast)
        M, K = A.shape
        N = B.shape[1]
        if config.get("HOPPER", 0) and not self._hopper_usable(A, B):
            # A HOPPER config where the Gluon kernel cannot run (a validated Triton is missing,
            # it failed here once, or this call's A/B are not 16-byte aligned): the portable
            # kernel, through launch(), which raises for a non-sm_90 device.
            return launch(config, A, B, scale_a, scale_b, bias, out_dtype, fast_accum=fast)
        if config.get("HOPPER", 0):
            from . import triton_fp8_hopper as hopper

            plan = HopperPlan(config, hopper.prepare(config, M, N, K, bias is not None, A.device), fast_accum=fast)
            try:
                out = plan(A, B, scale_a, scale_b, bias)
            except (ValueError, torch.OutOfMemoryError):
                raise
            except Exception as e:  # noqa: BLE001 - Gluon compile errors or API drift: fall back
                hopper_failed(A.device, e)
                self.reset_plans()
                return launch(config, A, B, scale_a, scale_b, bias, out_dtype, fast_accum=fast)
        else:
            plan = PortablePlan(config, prepare(config, M, N, K, A.dtype, bias is not None, A.device, fast))
            out = plan(A, B, scale_a, scale_b, bias)
        if final:  # not a default handed out while online tuning had to wait (graph capture)
            if len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans.clear()
            self._plans[key] = plan
        return out


register_backend(TritonBackend())
