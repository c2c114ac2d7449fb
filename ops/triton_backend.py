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
from typing import Optional

import torch

from hipbmm_inductor import envs, hardware, tuning

from .registry import Availability, register_backend
from .validate import check_out
from .triton_configs import CONFIG_KEYS, TWO_PART_WIDTHS, config_bucket, config_space, heuristic_config

__all__ = ["TritonBackend", "KERNEL_VERSION"]

# Part of the tuning key: bump when the kernel changes so that cached configs are re-tuned.
# v3: accumulation modes, A via TMA, the Gluon sm_90 kernel; v4: the Gluon kernel reads A in
# 8-row boxes below BLOCK_M and joins the M <= 16 space (split-K configs tuned at v3 lost to it);
# v5: two-part tile widths (48, 80, 96, 160) join the space, and its BLOCK_K 128 tiles run one
# 128-product chain per stage (faster and as exact as cuBLASLt: v4's timings of them are stale);
# v6: the Gluon kernel copies each stage's weight box in one 3-D TMA copy (faster on the H200);
# v7: it issues the first tile's first stages before its partitions start (faster at decode).
# v8: v7 hung on programs of several tiles under Triton 3.6 (its timings of those never finished).
KERNEL_VERSION = "preshuffled-v8"


# The accumulation mode changes numerics and the best config, and whether the sm_90 Gluon kernel
# can run here changes the candidates: each combination is tuned separately. Built once, not per
# GEMM call.
_EXTRA_KEYS = {
    (fast, hopper): f"{KERNEL_VERSION}/{'fast' if fast else 'promoted'}/{'gluon' if hopper else 'portable'}"
    for fast in (False, True) for hopper in (False, True)
}


def _parse_extra(extra) -> tuple[bool, bool]:
    """``(fast, hopper)`` of one of this kernel version's tuning keys (``_EXTRA_KEYS``); ``ValueError``
    naming what is wrong otherwise (settings_for_extra and config_error read keys through this)."""
    parts = extra.split("/") if isinstance(extra, str) else []
    if len(parts) != 3 or parts[1] not in ("promoted", "fast") or parts[2] not in ("gluon", "portable"):
        raise ValueError(f"tuning key {extra!r} is not <kernel version>/promoted|fast/gluon|portable")
    if parts[0] != KERNEL_VERSION:
        raise ValueError(f"tuned for kernel {parts[0]!r}; this Triton backend runs {KERNEL_VERSION!r}")
    return parts[1] == "fast", parts[2] == "gluon"


# The current CUDA device's index (absent from CPU builds of torch, where it is never called).
_cuda_get_device = getattr(torch._C, "_cuda_getDevice", None)


# Launch plans kept (one per shape and exact M); past this many the oldest built is dropped (a
# serving process with dynamic shapes sees a token count per prefill step: the plans of the
# shapes in use now stay, where clearing all of them would rebuild each at ~100 us).
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
    writes_out = True  # run(..., out=): a launch plan writes into any contiguous [M, N] bf16 tensor

    def __init__(self) -> None:
        self._plans: dict[tuple, object] = {}
        self._plans_tuner = None

    def availability(self, device: torch.device) -> Availability:
        device = torch.device(device)
        if importlib.util.find_spec("triton") is None:
            return Availability(False, "triton is not installed (from the checkout: pip install -e '.[triton]')")
        # Triton's interpreter runs kernels through numpy, which triton itself does not require.
        no_numpy = importlib.util.find_spec("numpy") is None
        interp_missing = "TRITON_INTERPRET=1, but Triton's interpreter needs numpy, which is not installed (pip install numpy)"
        if device.type == "cpu":
            if envs.TRITON_INTERPRET:
                if no_numpy:
                    return Availability(False, interp_missing)
                return Availability(True, "TRITON_INTERPRET=1: kernels run in Triton's CPU interpreter (slow)")
            return Availability(
                False, "Triton compiles for GPUs; on the CPU it runs only under TRITON_INTERPRET=1 (slow)"
            )
        if device.type != "cuda":
            return Availability(False, f"Triton has no backend for device type {device.type!r}")
        if not torch.cuda.is_available():
            return Availability(False, "torch.cuda.is_available() is False")
        if envs.TRITON_INTERPRET:
            if no_numpy:
                return Availability(False, interp_missing)
            return Availability(True, "TRITON_INTERPRET=1: kernels run in Triton's CPU interpreter (slow)")
        from .triton_fp8_gemm import native_fp8  # imports triton

        arch = hardware.arch(device) or "unknown architecture"
        if hardware.is_rocm():
            if not arch.startswith("gfx9"):
                return Availability(False, f"{arch}: the kernel targets CDNA (gfx9xx) matrix cores")
        else:
            major, _ = hardware.cuda_capability(device)
            if major < 8:
                return Availability(False, f"{arch}: needs sm_80 or newer (fp16 tensor cores at least)")
        native = [str(d).removeprefix("torch.") for d in (torch.float8_e4m3fn, torch.float8_e4m3fnuz)
                  if native_fp8("cuda", arch, d)]
        how = (f"fp8 tensor cores for {', '.join(native)}; other flavours widened to fp16 in-kernel"
               if native else "no fp8 tensor cores: fp8 widened to fp16 in-kernel (exact, slower)")
        return Availability(True, f"{arch}: {how}")

    # What `auto` rewrites on sm_90 is decided by these rules; part of the pass's cache key.
    routing_version = "sm90-h200-v5"

    def is_fast(self, device: torch.device) -> bool:
        # NOTE: False: no device-wide answer holds. Where this backend beats the vendor GEMM
        # depends on the shape and M: is_fast_for.
        return False

    def is_fast_for(self, device: torch.device, n: int, k: int, m: Optional[int]) -> bool:
        """Whether `auto` should route one linear (weight ``[n, k]``, ``m`` tokens, ``None`` when M is
        symbolic) here instead of the vendor GEMM; read by the compiler pass at compile time.

        Only on sm_90 with the Gluon kernel on a validated Triton (elsewhere the portable kernel
        loses to cuBLASLt above M = 64), for a static M <= 64: under CUDA graphs always; launched
        from Python (no graphs), only where one Gluon launch serves the shape. The evidence
        (``docs/results.md`` names the files):

        - GPU time: x1.23-2.95 at every point with M <= 64 over 19 weights from Llama-3, Qwen,
          Mistral and DeepSeek in three runs (``h200/suite_v8_run1.json``, ``h200/suite_v8_run2.json``,
          ``h200/suite_v8_run3.json``), a margin wide enough for
          shapes the suites lack; at M = 128-256 four weights in the sweep stay at x0.91-0.93
          under their best config (10240 x 8192 at M = 128; 6144 x 4096, 6144 x 5120 and
          7168 x 2048 at M = 256, ``h200/sweep_split.json``), too close to call for an unmeasured
          shape;
        - host time: in a compiled graph the call is the launch plan's own, into Inductor's
          buffer (``lowering/extern_call.py``): the Llama-3-8B block with its linears rewritten
          runs x1.09-1.20 at 1-128 tokens in the default mode in a loop that waits for each
          call, x1.17-1.50 in device time, and x1.43-1.60 at 1-16 tokens under CUDA graphs in
          device time (``h200/block_triton.json``). That holds where the heuristic picks the Gluon
          kernel: the portable kernel's split-K (the H200 rules' choice for a 128-column weight)
          launches twice and allocates a workspace, and a compiled 128 x 4096 linear ran x0.74
          without graphs (``h200/host_cost_compiled.json``);
        - symbolic M: no, a graph compiled for every M also serves prefill-sized M.
        """
        if m is None or m > 64 or not self._gluon_ready(device):
            return False
        # Read at compile time, like the rest of the rule: whether the graph is compiled for replay.
        from torch._inductor import config as inductor_config

        if inductor_config.triton.cudagraphs:
            return True
        fast = envs.HIPBMM_TRITON_ACCUMULATION == "fast"
        return bool(_heuristic(config_bucket(m), n, k, fast, True).get("HOPPER", 0))

    def describe_routing(self, device: torch.device) -> str:
        """What `auto` does with this backend on ``device``, in one line (``info`` prints it)."""
        if not self._gluon_ready(device):
            return "auto keeps the vendor GEMM (the Triton kernel beats it only on sm_90 with a validated Triton)"
        return ("auto rewrites linears with a static M <= 64 (decode): every one in graphs compiled for CUDA-graph "
                "replay, those the Gluon kernel serves in one launch in the default mode; the vendor GEMM for larger "
                "or symbolic M")

    @staticmethod
    def _gluon_ready(device: torch.device, fp8: torch.dtype = torch.float8_e4m3fn) -> bool:
        """Whether the sm_90 Gluon kernel serves ``fp8`` operands on ``device`` (else the portable one)."""
        device = torch.device(device)
        if device.type != "cuda" or hardware.is_rocm() or envs.TRITON_INTERPRET:
            return False
        if importlib.util.find_spec("triton") is None or not torch.cuda.is_available():
            return False
        from .triton_fp8_gemm import hopper_path  # imports triton

        return hopper_path(device if device.index is not None else torch.device("cuda", torch.cuda.current_device()),
                           fp8)

    # -- the per-call path ------------------------------------------------------------------
    def run(self, A, B, scale_a, scale_b, bias, out_dtype, out=None) -> torch.Tensor:
        """The GEMM, into a fresh tensor or into ``out`` (contiguous ``[M, N]`` bf16, which the
        compiled-graph entry :func:`.hipb_mm_fp8.hipb_mm_fp8_out` passes)."""
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
        if out is not None and plan is not None and not plan.out_checked:
            check_out(out, A, B)  # a plan built by an eager call has not seen an `out` yet
            plan.out_checked = True
        if device.index is not None and device.type == "cuda" and device.index != _cuda_get_device():
            # Triton compiles for, and launches on the stream of, the current device.
            with torch.cuda.device(device):
                if plan is None:
                    return self._first_call(key, A, B, scale_a, scale_b, bias, out_dtype, out)
                return plan(A, B, scale_a, scale_b, bias, out)
        if plan is None:
            return self._first_call(key, A, B, scale_a, scale_b, bias, out_dtype, out)
        return plan(A, B, scale_a, scale_b, bias, out)

    def config_for(self, A, B, scale_a, scale_b, bias, out_dtype) -> tuple[dict, bool]:
        """``(config, fast_accum)`` this call launches with: a cached or tuned config for its
        tuning key, else the heuristic (what ``bench`` records beside each timing)."""
        fast = envs.HIPBMM_TRITON_ACCUMULATION == "fast"
        config, _ = self._resolve(A, B, scale_a, scale_b, bias, out_dtype, fast)
        if config.get("HOPPER", 0) and not self._hopper_usable(A, B):
            M, K = A.shape
            config = _heuristic(config_bucket(M), B.shape[1], K, fast, False)
        return config, fast

    def launch_stats(self) -> dict:
        """Plans built and why calls went through Triton's binder instead of a relaunch
        (``{"plans": n, "through_triton": {reason: calls}}``), summed over this process."""
        total: Counter = Counter()
        for plan in list(self._plans.values()):  # a snapshot: another thread may add plans
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
            default=_heuristic(config_bucket(M), N, K, fast, hopper),
            candidates=lambda: config_space(M, N, K, fast, hopper),
            run=_tuner_run(fast),
            extra_key=_EXTRA_KEYS[fast, hopper],
        )

    @staticmethod
    def _hopper_usable(A, B) -> bool:
        from .triton_fp8_gemm import hopper_path  # imports triton

        return (A.device.type == "cuda" and not envs.TRITON_INTERPRET and hopper_path(A.device, A.dtype)
                and A.data_ptr() % 16 == 0 and B.data_ptr() % 16 == 0)

    def _first_call(self, key, A, B, scale_a, scale_b, bias, out_dtype, out=None) -> torch.Tensor:
        from .triton_fp8_gemm import hopper_failed, hopper_path, launch, prepare  # imports triton
        from .triton_plan import HopperPlan, PortablePlan, evict_oldest, into as _into  # imports triton

        if out is not None:  # once per plan: a compiled graph passes buffers of the one layout checked here
            check_out(out, A, B)

        fast = envs.HIPBMM_TRITON_ACCUMULATION == "fast"  # raises, naming the variable, if invalid
        if (A.device.type == "cuda" and not envs.TRITON_INTERPRET and hopper_path(A.device, A.dtype)
                and (A.data_ptr() | B.data_ptr()) & 15):
            # The Gluon kernel serves this shape, but its TMA cannot address this call's A or B:
            # this call runs on the portable kernel's heuristic and builds no plan, so that the
            # shape's aligned calls still get the Gluon plan.
            M, K = A.shape
            return _into(out, launch(_heuristic(config_bucket(M), B.shape[1], K, fast), A, B, scale_a, scale_b, bias,
                                     out_dtype, fast_accum=fast))
        config, final = self._resolve(A, B, scale_a, scale_b, bias, out_dtype, fast)
        M, K = A.shape
        N = B.shape[1]
        if config.get("HOPPER", 0) and not self._hopper_usable(A, B):
            # A HOPPER config where the Gluon kernel cannot run (a validated Triton is missing,
            # it failed here once, or this call's A/B are not 16-byte aligned): the portable
            # kernel, through launch(), which raises for a non-sm_90 device.
            return _into(out, launch(config, A, B, scale_a, scale_b, bias, out_dtype, fast_accum=fast))
        if config.get("HOPPER", 0):
            from . import triton_fp8_hopper as hopper  # imports Gluon, which hopper_path() found importable

            plan = HopperPlan(config, hopper.prepare(config, M, N, K, bias is not None, A.device), A.device,
                              fast_accum=fast)
            try:
                result = plan(A, B, scale_a, scale_b, bias, out)
            except (ValueError, torch.OutOfMemoryError):
                raise
            except Exception as e:  # noqa: BLE001 - Gluon compile errors or API drift: fall back
                hopper_failed(A.device, e)
                self.reset_plans()
                return _into(out, launch(config, A, B, scale_a, scale_b, bias, out_dtype, fast_accum=fast))
        else:
            plan = PortablePlan(config, prepare(config, M, N, K, A.dtype, bias is not None, A.device, fast), A.device)
            result = plan(A, B, scale_a, scale_b, bias, out)
        plan.out_checked = out is not None  # checked at the top of this call
        if final:  # not a default handed out while online tuning had to wait (graph capture)
            evict_oldest(self._plans, PLAN_CACHE_SIZE)
            self._plans[key] = plan
        return result

    def settings_for_extra(self, extra: str, device: torch.device, fp8: torch.dtype) -> dict:
        """The settings under which a call of this backend on ``device`` keys its tuning row with
        ``extra`` (``{variable: value}``), so that ``tune --from`` can tune a shape the way it was
        recorded; ``ValueError`` naming the mismatch where no setting here would."""
        fast, gluon = _parse_extra(extra)
        gluon_here = fp8 is not None and self._gluon_ready(device, fp8)
        if gluon != gluon_here:
            raise ValueError(f"recorded on the {'gluon' if gluon else 'portable'} kernel; the "
                             f"{'gluon' if gluon_here else 'portable'} kernel runs this shape here")
        return {"HIPBMM_TRITON_ACCUMULATION": "fast" if fast else "promoted"}

    def config_error(self, config: dict, n: int, k: int, extra: str):
        """Why a cached or imported ``config`` cannot serve an ``[*, K] x [K, N]`` GEMM under the
        tuning key ``extra`` (``None``: it can). The tuner calls this once per loaded row, never per call.

        Usable means: one of the configs this kernel version's space (any M bucket) or heuristic
        would launch for ``(N, K)`` in ``extra``'s accumulation mode and kernel (portable or the
        sm_90 Gluon one). The launchers' own rules are checked first, to name the broken one.
        """
        try:
            fast, hopper = _parse_extra(extra)
        except ValueError as e:
            return str(e)
        if not isinstance(config, dict):
            return f"a triton config is a JSON object, got {type(config).__name__}"
        unknown = sorted(str(key) for key in config if key not in CONFIG_KEYS)
        missing = [key for key in CONFIG_KEYS if key not in config]
        if unknown or missing:
            return (f"a triton config has exactly the keys {', '.join(CONFIG_KEYS)}"
                    + (f"; missing {', '.join(missing)}" if missing else "")
                    + (f"; unknown {', '.join(unknown)}" if unknown else ""))
        not_int = [f"{key}={config[key]!r}" for key in CONFIG_KEYS if type(config[key]) is not int]
        if not_int:
            return f"config values must be integers, got {', '.join(not_int)}"
        if type(n) is not int or type(k) is not int or n < 16 or n % 16 or k < 32 or k % 32:
            return f"N={n!r}, K={k!r} is not a shape the op takes (N >= 16, N % 16 == 0, K % 32 == 0)"
        bm, bn, bk, sk = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"], config["SPLIT_K"]
        if config["HOPPER"] and not hopper:
            return "HOPPER=1 is a config of the sm_90 Gluon kernel, and this key is for the portable kernel"
        if not config["HOPPER"] and (bk < 32 or bk % 32 or bn < 16 or bn % 16 or sk < 1 or k % (bk * sk)):
            return (f"BLOCK_K={bk}, BLOCK_N={bn}, SPLIT_K={sk}: the kernel needs BLOCK_K % 32 == 0, "
                    f"BLOCK_N % 16 == 0 and K % (BLOCK_K * SPLIT_K) == 0 (K={k})")
        if config["HOPPER"] and (bk < 1 or k % bk):
            return f"BLOCK_K={bk}: the Gluon kernel needs K % BLOCK_K == 0 (K={k})"
        two_part = config["HOPPER"] and bn in TWO_PART_WIDTHS
        if bm < 1 or bm & (bm - 1) or (bn & (bn - 1) and not two_part) or bk & (bk - 1):
            return (f"BLOCK_M={bm}, BLOCK_N={bn}, BLOCK_K={bk}: block sizes must be powers of two "
                    f"(the sm_90 kernel also takes BLOCK_N in {TWO_PART_WIDTHS})")
        # The whole space for (N, K) in this mode, over every M bucket (m_bucket caps at 4096),
        # with the heuristics: built once per (N, K, mode) on this backend object.
        spaces = self.__dict__.setdefault("_config_spaces", {})
        space = spaces.get((n, k, fast, hopper))
        if space is None:
            space = set()
            for m in (1 << e for e in range(13)):
                for c in config_space(m, n, k, fast, hopper) + [heuristic_config(m, n, k, fast, hopper)]:
                    space.add(tuple(sorted(c.items())))
            space = spaces[n, k, fast, hopper] = frozenset(space)
        if tuple(sorted(config.items())) not in space:
            return (f"not in the {'fast' if fast else 'promoted'}-accumulation config space of the "
                    f"{'sm_90 Gluon' if hopper else 'portable'} kernel for N={n}, K={k}")
        return None


register_backend(TritonBackend())
