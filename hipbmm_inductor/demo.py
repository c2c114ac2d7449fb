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

import argparse
import re
import statistics
import time
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cli import backend_arg, device_arg, positive_int

__all__ = ["FP8Linear", "FP8MLP", "quantize_per_token", "quantize_weight_per_channel", "run_demo", "register"]

FORMS = ("scaled_mm", "scaled_mm_v2", "channelwise")


def _fp8_dtype(device: torch.device) -> torch.dtype:
    # MI300 (gfx942) hipBLASLt takes the fnuz flavour; everything else here the OCP one.
    if device.type == "cuda" and torch.version.hip:
        arch = torch.cuda.get_device_properties(device).gcnArchName
        if "gfx94" in arch:
            return torch.float8_e4m3fnuz
    return torch.float8_e4m3fn


def quantize_per_token(x: torch.Tensor, fp8: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [M, K]`` -> fp8 ``[M, K]`` and fp32 per-token scales ``[M, 1]`` (dynamic, absmax)."""
    fmax = torch.finfo(fp8).max
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / fmax
    return (x.float() / scale).clamp(-fmax, fmax).to(fp8), scale


def quantize_weight_per_channel(w: torch.Tensor, fp8: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [N, K]`` -> fp8 ``[N, K]`` and fp32 per-channel scales ``[N, 1]`` (vLLM's layout)."""
    fmax = torch.finfo(fp8).max
    scale = w.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / fmax
    return (w.float() / scale).clamp(-fmax, fmax).to(fp8), scale


class FP8Linear(nn.Module):
    """An FP8 W8A8 linear written the way real code writes it (``form`` picks the spelling).

    ``scale_layout`` is how the per-channel weight scale is stored and fed: ``"n1"`` as ``[N, 1]``
    passed transposed (vLLM), ``"1n"`` as ``[1, N]``, ``"flat"`` as 1-D ``[N]`` viewed to 2-D.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False, form: str = "scaled_mm",
                 use_fast_accum: bool = False, scale_layout: str = "n1", out_dtype: torch.dtype = torch.bfloat16,
                 device=None, fp8: Optional[torch.dtype] = None, seed: int = 0):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form: expected one of {FORMS}, got {form!r}")
        device = torch.device(device or "cpu")
        self.fp8 = fp8 or _fp8_dtype(device)
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(out_features, in_features, generator=g) / in_features**0.5
        wq, ws = quantize_weight_per_channel(w, self.fp8)
        self.weight = nn.Parameter(wq.to(device), requires_grad=False)
        ws = {"n1": ws, "1n": ws.reshape(1, -1), "flat": ws.reshape(-1)}[scale_layout]
        self.weight_scale = nn.Parameter(ws.contiguous().to(device), requires_grad=False)
        b = torch.randn(out_features, generator=g).to(torch.bfloat16) if bias else None
        self.bias = nn.Parameter(b.to(device), requires_grad=False) if bias else None
        self.form, self.use_fast_accum, self.scale_layout, self.out_dtype = form, use_fast_accum, scale_layout, out_dtype

    def _scale_b(self) -> torch.Tensor:
        s = self.weight_scale
        return {"n1": lambda: s.t(), "1n": lambda: s, "flat": lambda: s.view(1, -1)}[self.scale_layout]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, xs = quantize_per_token(x, self.fp8)
        w_t = self.weight.t()
        if self.form == "scaled_mm":
            return torch._scaled_mm(q, w_t, scale_a=xs, scale_b=self._scale_b(), bias=self.bias,
                                    out_dtype=self.out_dtype, use_fast_accum=self.use_fast_accum)
        if self.form == "scaled_mm_v2":
            from torch.nn.functional import ScalingType

            return F.scaled_mm(q, w_t, xs, ScalingType.RowWise, self._scale_b(), ScalingType.RowWise,
                               bias=self.bias, output_dtype=self.out_dtype, use_fast_accum=self.use_fast_accum)
        # vLLM's channelwise fallback (docs/contract.md, "vLLM"): unit scales, fp32 out, epilogue outside.
        one = torch.ones(1, dtype=torch.float32, device=x.device)
        out = torch._scaled_mm(q, w_t, scale_a=one, scale_b=one, out_dtype=torch.float32,
                               use_fast_accum=self.use_fast_accum)
        out = torch.narrow(out, 0, 0, x.shape[0])
        out = out * torch.narrow(xs, 0, 0, x.shape[0]) * self._scale_b()
        if self.bias is not None:
            out = out + self.bias
        return out.to(self.out_dtype).view(x.shape[0], -1)


class FP8MLP(nn.Module):
    """Llama MLP ``down(silu(gate(x)) * up(x))``: one linear in each form."""

    def __init__(self, hidden: int, intermediate: int, device=None):
        super().__init__()
        self.gate_proj = FP8Linear(hidden, intermediate, form="scaled_mm", device=device, seed=1)
        from .compat import DYNAMO_TRACES_SCALED_MM_V2

        # F.scaled_mm is a graph break in older Dynamo (compat.py): there the layer uses _scaled_mm.
        up_form = "scaled_mm_v2" if DYNAMO_TRACES_SCALED_MM_V2 else "scaled_mm"
        self.up_proj = FP8Linear(hidden, intermediate, form=up_form, scale_layout="flat", device=device, seed=2)
        self.down_proj = FP8Linear(intermediate, hidden, form="channelwise", bias=True, device=device, seed=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


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
    import torch._inductor.config as inductor_config
    from torch._inductor.utils import run_and_get_code

    import hipbmm_inductor
    from hipbmm_inductor import envs, lowering

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokens, hidden, intermediate = demo_sizes(dev, tokens, hidden, intermediate)
    named = demo_backend(dev, torch.version.hip)
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
    # (mode="reduce-overhead"): that is where `auto` rewrites on sm_90 (TritonBackend.is_fast_for).
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
                # Default mode (kernels launched from Python, no graphs): `auto` keeps the vendor
                # GEMM there on NVIDIA, so the rewrite is timed with the Triton backend named.
                torch._dynamo.reset()
                timings["default, without"] = _median_ms(torch.compile(model), x, iters)
                timings["eager"] = _median_ms(model, x, iters)
        finally:
            (lowering.enable if was_enabled else lowering.disable)()
        if dev.type == "cuda":
            chosen = envs.raw("HIPBMM_BACKEND")
            hipbmm_inductor.set_backend("triton" if envs.HIPBMM_BACKEND == "auto" and not torch.version.hip
                                        else envs.HIPBMM_BACKEND)
            timings["default backend"] = envs.HIPBMM_BACKEND
            try:
                torch._dynamo.reset()
                timings["default, with"] = _median_ms(torch.compile(model), x, iters)
            finally:
                hipbmm_inductor.set_backend(None if chosen is None else str(chosen))
                torch._dynamo.reset()
    code = "\n".join(codes)

    calls = re.findall(r"hipbmm\.hipb_mm_fp8\.default\(\w+, (\w+),", code)
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
              f"{t['default, without']:.3f} ms, with it ({t['default backend']} backend) {t['default, with']:.3f} ms; "
              f"eager {t['eager']:.3f} ms" + ("" if torch.version.hip else
              ". On NVIDIA each hipb_mm_fp8 call costs more host time than the vendor GEMM's, so `auto` rewrites "
              "only graphs replayed as CUDA graphs"))
    else:
        print(f"speed: not measured here. On the CPU hipb_mm_fp8 runs the fp32 reference backend (the test oracle), "
              f"so its timings would say nothing about GPU speed; GPU figures are in docs/benchmarks.md "
              f"(compile took {compile_s:.1f} s)")
    return {"counters": stats.as_dict(), "rewritten": stats.rewritten, "folded": folded, "hipb_calls": len(calls),
            "shuffles_per_run": per_call_shuffles, "max_abs_err": err, "max_abs_err_without_rewrite": plain_err,
            "max_abs_ref": scale,
            "timings_ms": {k: v for k, v in timings.items() if isinstance(v, float)}}


def _cmd(args: argparse.Namespace) -> int:
    result = run_demo(tokens=args.tokens, hidden=args.hidden, intermediate=args.intermediate,
                      device=args.device, backend=args.backend, iters=args.iters)
    # Skipped candidates are a legitimate outcome (printed with their reasons); a rewrite whose
    # weight did not fold into a constant is a bug.
    return 1 if result["rewritten"] and not result["folded"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="compile an FP8 Llama MLP with freezing and show what the lowering did")
    p.add_argument("--tokens", type=positive_int, default=None,
                   help="M, the number of tokens (default 64 on cpu, 16 on gpu)")
    p.add_argument("--hidden", type=positive_int, default=None, help="hidden size (default 256 on cpu, 4096 on gpu)")
    p.add_argument("--intermediate", type=positive_int, default=None,
                   help="MLP intermediate size (default 512 on cpu, 14336 on gpu)")
    p.add_argument("--device", type=device_arg, default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument("--backend", type=backend_arg, default=None,
                   help="hipb_mm_fp8 backend (default: HIPBMM_BACKEND if set, else reference on cpu, auto on a GPU)")
    p.add_argument("--iters", type=positive_int, default=10, help="timed iterations per path (default 10)")
    p.set_defaults(func=_cmd)
