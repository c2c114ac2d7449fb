"""``python -m hipbmm_inductor demo``: an FP8 Llama-style MLP through ``torch.compile``.

The model is ordinary PyTorch: each linear quantises its input per token (dynamic, e4m3) and
multiplies by a per-channel-quantised fp8 weight, written in the three forms the lowering knows
(``torch._scaled_mm`` rowwise, ``torch.nn.functional.scaled_mm`` with RowWise recipes, and vLLM's
channelwise fallback). The demo compiles it with freezing, then reports what the pass rewrote or
skipped and why, whether the weights were folded, the error against eager, and the latency of
both. On the CPU the only backend is ``reference`` (the fp32 oracle), which the pass does not pick
by default (it is not faster than anything), so the demo names it explicitly, as a user would,
and reports no speed there (an fp32 oracle on a shared CPU says nothing about GPU speed). On a
GPU the demo runs ``auto``, as an unmodified deployment would: on sm_90 it rewrites the linears
the routing rules pick (``TritonBackend.is_fast_for``; the default model, Llama-3-8B's MLP at 16
tokens, qualifies), on ROCm it picks aiter where usable, elsewhere it keeps the vendor GEMM and
says why. Speed is shown both ways a model runs: compiled in the default mode (each kernel
launched from Python) and replayed in a CUDA graph. ``--backend`` or ``HIPBMM_BACKEND``
overrides the choice.
"""

from __future__ import annotations

import re
import statistics
import time
from typing import Optional

import torch

import hipbmm_inductor
from hipbmm_inductor import envs, hardware, lowering

from .models import FP8MLP

__all__ = ["run_demo", "demo_backend", "demo_sizes", "DEFAULT_SIZES"]


def _median_ms(fn, x, iters: int, calls: int = 10) -> float:
    """Median over ``iters`` samples of the mean time of ``calls`` back-to-back calls: one
    synchronisation per sample, so the numbers track throughput rather than launch jitter."""
    for _ in range(3):  # CUDA-graph trees record on the second or third call: keep that out
        fn(x)
    times = []
    for _ in range(iters):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls if x.is_cuda else 1):
            fn(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3 / (calls if x.is_cuda else 1))
    return statistics.median(times)


# (tokens, hidden, intermediate) when not given: small on the CPU (the reference backend is an
# fp32 oracle, slow on purpose), Llama-3-8B's MLP at decode on a GPU.
DEFAULT_SIZES = {"cpu": (64, 256, 512), "cuda": (16, 4096, 14336)}


def demo_backend(device: torch.device, hip: Optional[str]) -> Optional[str]:
    """The backend the demo names when the user named none (``None``: leave it to ``auto``)."""
    return "reference" if device.type == "cpu" else None


def demo_sizes(device: torch.device, tokens: Optional[int], hidden: Optional[int],
               intermediate: Optional[int]) -> tuple[int, int, int]:
    """``(tokens, hidden, intermediate)``: the given ones, the device's :data:`DEFAULT_SIZES` for
    the rest."""
    defaults = DEFAULT_SIZES["cpu" if device.type == "cpu" else "cuda"]
    return tuple(v if v is not None else d for v, d in zip((tokens, hidden, intermediate), defaults))


def run_demo(tokens: Optional[int] = None, hidden: Optional[int] = None, intermediate: Optional[int] = None,
             device: Optional[str] = None, backend: Optional[str] = None, iters: int = 10) -> dict:
    """Build, compile and compare; print the report and return its figures. Sizes left as
    ``None`` take the device's :data:`DEFAULT_SIZES`."""
    # Inductor is imported when the demo runs, not when the command line is built: `info`, `tune`
    # and `cache` must not load it.
    import torch._inductor.config as inductor_config
    from torch._inductor.utils import run_and_get_code  # (Inductor too)

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokens, hidden, intermediate = demo_sizes(dev, tokens, hidden, intermediate)
    named = demo_backend(dev, hardware.is_rocm())
    if backend:
        hipbmm_inductor.set_backend(backend)
    elif named and not envs.is_set("HIPBMM_BACKEND"):
        hipbmm_inductor.set_backend(named)  # explicit choice = opt in (see module docstring)
        print(f"device {dev.type}: selecting the '{named}' backend explicitly (the pass only rewrites by default "
              f"where the backend is known to be fast)")
    lowering.install()
    lowering.reset_counters()

    torch.manual_seed(0)
    model = FP8MLP(hidden, intermediate, device=dev).eval()
    x = torch.randn(tokens, hidden, device=dev, dtype=torch.bfloat16)
    # On a GPU the model is compiled as serving engines run it, for CUDA-graph replay
    # (mode="reduce-overhead"); the default mode is timed too, further down.
    mode = "reduce-overhead" if dev.type == "cuda" else None
    with torch.no_grad(), inductor_config.patch(freezing=True):
        ref = model(x)
        torch._dynamo.reset()
        compiled = torch.compile(model, mode=mode)
        t0 = time.perf_counter()
        out, codes = run_and_get_code(compiled, x)
        out = out.clone()  # cudagraph trees reuse their output buffers on the next replay
        compile_s = time.perf_counter() - t0
        stats = lowering.counters()
        # The same compile without the rewrite: Inductor fuses silu(gate) * up in fp32 where eager
        # rounds it to bf16 before the next quantisation, so some error against eager is
        # Inductor's, not ours. This separates the two.
        timings: dict = {}
        if dev.type == "cuda":
            timings["graphs, with"] = _median_ms(compiled, x, iters)
        torch._dynamo.reset()
        was_enabled = lowering.is_enabled()
        lowering.disable()
        try:
            plain_fn = torch.compile(model, mode=mode)
            plain = plain_fn(x).clone()
            if dev.type == "cuda":
                timings["graphs, without"] = _median_ms(plain_fn, x, iters)
                # Default mode: kernels launched from Python, no graphs.
                torch._dynamo.reset()
                timings["default, without"] = _median_ms(torch.compile(model), x, iters)
                timings["eager"] = _median_ms(model, x, iters)
        finally:
            (lowering.enable if was_enabled else lowering.disable)()
        if dev.type == "cuda":
            torch._dynamo.reset()
            timings["default, with"] = _median_ms(torch.compile(model), x, iters)
            torch._dynamo.reset()
    code = "\n".join(codes)

    calls = re.findall(r"(?:hipbmm\.hipb_mm_fp8\.default|\bhipb_mm_fp8_out)\(\w+, (\w+),", code)
    folded = bool(calls) and all(c.startswith("_frozen_param") or c.startswith("constant") for c in calls)
    per_call_shuffles = code.count("shuffle_weight")
    err = (out.float() - ref.float()).abs().max().item()
    plain_err = (plain.float() - ref.float()).abs().max().item()
    scale = ref.float().abs().max().item()

    print(f"model: FP8 Llama MLP, hidden={hidden}, intermediate={intermediate}, tokens={tokens}, device={dev}, "
          f"backend={envs.HIPBMM_BACKEND}")
    print("lowering:")
    print("  " + stats.format().replace("\n", "\n  "))
    if calls:
        print(f"weights folded: {folded} (hipb_mm_fp8 calls in generated code: {len(calls)}, weight operands "
              f"{', '.join(calls)}; shuffle_weight calls per run: {per_call_shuffles})")
    else:
        print("weights folded: - (nothing was rewritten; see the reasons above)")
    print(f"max |compiled - eager| = {err:.3g} (max |eager| = {scale:.3g}, relative {err / max(scale, 1e-30):.2g}); "
          f"Inductor without the rewrite: {plain_err:.3g}")
    if dev.type == "cuda":
        t = timings
        print(f"compiled for CUDA graphs (mode='reduce-overhead', median of {iters}): without the rewrite "
              f"{t['graphs, without']:.3f} ms, with it {t['graphs, with']:.3f} ms (compile took {compile_s:.1f} s)")
        print(f"compiled, default mode (kernels launched from Python): without the rewrite "
              f"{t['default, without']:.3f} ms, with it {t['default, with']:.3f} ms; eager {t['eager']:.3f} ms")
    else:
        print(f"speed: not measured here. On the CPU hipb_mm_fp8 runs the fp32 reference backend (the test oracle), "
              f"so its timings would say nothing about GPU speed; GPU figures are in docs/benchmarks.md "
              f"(compile took {compile_s:.1f} s)")
    return {"counters": stats.as_dict(), "rewritten": stats.rewritten, "folded": folded, "hipb_calls": len(calls),
            "shuffles_per_run": per_call_shuffles, "max_abs_err": err, "max_abs_err_without_rewrite": plain_err,
            "max_abs_ref": scale,
            "timings_ms": {k: v for k, v in timings.items() if isinstance(v, float)}}
