"""The ``triton`` backend of ``hipb_mm_fp8``: :mod:`.triton_fp8_gemm` behind the registry.

Portable: it runs wherever Triton runs a GPU kernel (NVIDIA, ROCm), and on the CPU under
``TRITON_INTERPRET=1`` (how CI tests it). It reads the same preshuffled weights as aiter's
``hipb_mm``, so one prepacked model serves every backend.

Every call asks :func:`hipbmm_inductor.tuning.choose` for its config (an in-memory dict lookup
on the hot path), passing the per-(N, K, M bucket) heuristic as the default and the config space
as the tuner's candidates. Triton is imported on first use, never at ``import hipbmm_inductor``.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from hipbmm_inductor import envs

from .registry import Availability, register_backend

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


@functools.lru_cache(maxsize=2)
def _tuner_run(fast: bool):
    from .triton_fp8_gemm import launch

    return functools.partial(launch, fast_accum=fast)


@functools.lru_cache(maxsize=None)
def _heuristic(bucket: int, N: int, K: int, fast_accum: bool = False, hopper: bool = False) -> dict:
    from .triton_configs import heuristic_config

    # Memoised: the heuristic is pure in (M bucket, N, K, mode, device kind), and M=1 decode
    # calls are host-bound, so every microsecond of Python on this path shows up in the step time.
    return heuristic_config(bucket, N, K, fast_accum, hopper)


class TritonBackend:
    name = "triton"

    def availability(self, device: torch.device) -> Availability:
        device = torch.device(device)
        if importlib.util.find_spec("triton") is None:
            return Availability(False, "triton is not installed (pip install 'hipbmm-inductor[triton]')")
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

    def config_for(self, A, B, scale_a, scale_b, bias, out_dtype) -> tuple[dict, bool]:
        """``(config, fast_accum)`` this call launches with: a cached or tuned config for its
        tuning key, else the heuristic (what ``bench`` records beside each timing)."""
        from hipbmm_inductor import tuning

        from .triton_configs import config_space, m_bucket
        from .triton_fp8_gemm import hopper_path

        M, K = A.shape
        N = B.shape[1]
        fast = envs.HIPBMM_TRITON_ACCUMULATION == "fast"
        hopper = A.device.type == "cuda" and not envs.TRITON_INTERPRET and hopper_path(A.device, A.dtype)
        config = tuning.choose(
            "triton", A, B, scale_a, scale_b, bias, out_dtype,
            default=_heuristic(m_bucket(M), N, K, fast, hopper),
            candidates=lambda: config_space(M, N, K, fast, hopper),
            run=_tuner_run(fast),
            extra_key=_EXTRA_KEYS[fast, hopper],
        )
        return config, fast

    def run(self, A, B, scale_a, scale_b, bias, out_dtype) -> torch.Tensor:
        from .triton_fp8_gemm import launch

        config, fast = self.config_for(A, B, scale_a, scale_b, bias, out_dtype)
        return launch(config, A, B, scale_a, scale_b, bias, out_dtype, fast_accum=fast)

    def config_error(self, config: dict, n: int, k: int, extra: str):
        """Why a cached or imported ``config`` cannot serve an ``[*, K] x [K, N]`` GEMM under the
        tuning key ``extra`` (``None``: it can). The tuner calls this once per loaded row, never per call.

        Usable means: one of the configs this kernel version's space (any M bucket) or heuristic
        would launch for ``(N, K)`` in ``extra``'s accumulation mode and kernel (portable or the
        sm_90 Gluon one). The launchers' own rules are checked first, to name the broken one.
        """
        from .triton_configs import CONFIG_KEYS, config_space, heuristic_config

        parts = extra.split("/") if isinstance(extra, str) else []
        if len(parts) != 3 or parts[1] not in ("promoted", "fast") or parts[2] not in ("gluon", "portable"):
            return f"tuning key {extra!r} is not <kernel version>/promoted|fast/gluon|portable"
        if parts[0] != KERNEL_VERSION:
            return f"tuned for kernel {parts[0]!r}; this Triton backend runs {KERNEL_VERSION!r}"
        fast, hopper = parts[1] == "fast", parts[2] == "gluon"
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
        if bm < 1 or bm & (bm - 1) or bn & (bn - 1) or bk & (bk - 1):
            return f"BLOCK_M={bm}, BLOCK_N={bn}, BLOCK_K={bk}: block sizes must be powers of two"
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
