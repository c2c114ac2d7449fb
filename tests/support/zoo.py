"""A zoo of FP8 linears as third-party code writes them, in plain PyTorch (this module never
imports hipbmm_inductor, so it can run in a process without the package).

Each entry is one small module plus its inputs: static and dynamic scales, per-tensor and rowwise
(per-token x per-channel), fp32 / bf16 / fp16 outputs, scales held as parameters, buffers, plain
attributes, module-level globals and graph inputs, and vLLM's channelwise fallback with its
module-level unit scale. ``REWRITES[name]`` is how many GEMMs of the entry the lowering rewrites
(with a backend named explicitly); the rest are left exactly as they were.

Run as a script (``python tests/support/zoo.py OUT.pt``) it compiles every entry with freezing
under ``no_grad`` and saves the outputs: that is the "package absent" side of
tests/lowering/test_zoo.py.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch
import torch.nn as nn

FP8 = torch.float8_e4m3fn
FMAX = torch.finfo(FP8).max
K, N, M = 64, 32, 8  # the smallest shapes the preshuffle tile takes (N % 16, K % 32)

# Held outside any module: Dynamo lifts module-level tensors to graph inputs.
GLOBAL_TENSORS: dict[str, torch.Tensor] = {}
# vLLM's real channelwise fallback keeps its unit scale in a module-level tensor
# (vllm/model_executor/layers/quantization/utils/w8a8_utils.py: TORCH_DEVICE_IDENTITY).
TORCH_DEVICE_IDENTITY = torch.ones(1, dtype=torch.float32)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weight(seed: int):
    """Per-channel fp8 weight [N, K] and its fp32 scale [N, 1] (vLLM's layout)."""
    w = torch.randn(N, K, generator=_gen(seed)) / K**0.5
    ws = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FMAX
    return (w / ws).clamp(-FMAX, FMAX).to(FP8), ws


def _per_token(x):
    s = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / FMAX
    return (x.float() / s).clamp(-FMAX, FMAX).to(FP8), s


def _per_tensor(x, s):
    return (x.float() / s).clamp(-FMAX, FMAX).to(FP8)


class _Holder(nn.Module):
    """Keeps named tensors as parameters, buffers, plain attributes or module-level globals."""

    def __init__(self, holder: str, key: str):
        super().__init__()
        self.holder, self.key = holder, key

    def hold(self, name: str, t: torch.Tensor) -> None:
        if self.holder == "param":
            setattr(self, name, nn.Parameter(t, requires_grad=False))
        elif self.holder == "buffer":
            self.register_buffer(name, t)
        elif self.holder == "attribute":
            setattr(self, name, t)  # a plain tensor attribute, neither parameter nor buffer
        elif self.holder == "global":
            GLOBAL_TENSORS[f"{self.key}.{name}"] = t
        elif self.holder != "input":
            raise ValueError(f"holder: {self.holder!r}")

    def get(self, name: str, extra: dict) -> torch.Tensor:
        if self.holder == "global":
            return GLOBAL_TENSORS[f"{self.key}.{name}"]
        if self.holder == "input":
            return extra[name]
        return getattr(self, name)


class Rowwise(_Holder):
    """Dynamic per-token activation scales x per-channel weight scales (``ws`` held as told)."""

    def __init__(self, holder, key, out_dtype=torch.bfloat16, bias=False, seed=0):
        super().__init__(holder, key)
        w, ws = _weight(seed)
        self.weight = nn.Parameter(w, requires_grad=False)
        self.hold("ws", ws)
        self.inputs = {"ws": ws} if holder == "input" else {}
        self.bias = nn.Parameter(torch.randn(N, generator=_gen(seed + 1)).to(torch.bfloat16), requires_grad=False) if bias else None
        self.out_dtype = out_dtype

    def forward(self, x, **extra):
        q, xs = _per_token(x)
        return torch._scaled_mm(q, self.weight.t(), scale_a=xs, scale_b=self.get("ws", extra).t(),
                                bias=self.bias, out_dtype=self.out_dtype)


class PerTensor(_Holder):
    """Per-tensor scales: static (a held activation scale) or dynamic (absmax of the input)."""

    def __init__(self, holder, key, out_dtype, static: bool, seed=0):
        super().__init__(holder, key)
        w, w_channel = _weight(seed)
        ws = w_channel.max().reshape(())  # one scale for the whole weight: requantise to it
        self.weight = nn.Parameter((w.float() * w_channel / ws).clamp(-FMAX, FMAX).to(FP8), requires_grad=False)
        self.hold("ws", ws)
        self.static = static
        xs = torch.tensor(4.0 / FMAX)  # a calibrated static input scale (inputs are ~N(0, 1))
        if static:
            self.hold("xs", xs)
        self.inputs = {"ws": ws, **({"xs": xs} if static else {})} if holder == "input" else {}
        self.out_dtype = out_dtype

    def forward(self, x, **extra):
        if self.static:
            xs = self.get("xs", extra)
        else:
            xs = (x.abs().amax().float() / FMAX).clamp(min=1e-12)
        q = _per_tensor(x, xs)
        return torch._scaled_mm(q, self.weight.t(), scale_a=xs, scale_b=self.get("ws", extra), out_dtype=self.out_dtype)


class Channelwise(_Holder):
    """vLLM's fallback: fp32 GEMM with one-element scales, then ``* x_scale * w_scale.t()``.

    ``unit`` is where the one-element scales live; ``"vllm"`` is vLLM's own module-level
    ``TORCH_DEVICE_IDENTITY`` (Dynamo lifts it to a graph input), with vLLM's row ``narrow``.
    ``value`` other than 1 is a static per-tensor pair folded in front of the epilogue.
    """

    def __init__(self, holder, key, value=1.0, bias=True, seed=0):
        super().__init__(holder, key)
        w, ws = _weight(seed)
        self.weight = nn.Parameter(w, requires_grad=False)
        self.weight_scale = nn.Parameter(ws, requires_grad=False)
        self.bias = nn.Parameter(torch.randn(N, generator=_gen(seed + 1)).to(torch.bfloat16), requires_grad=False) if bias else None
        if holder != "vllm":
            self.hold("ua", torch.full((1,), value))
            self.hold("ub", torch.full((1,), 1.0 / value))
        self.inputs = {"ua": torch.full((1,), value), "ub": torch.full((1,), 1.0 / value)} if holder == "input" else {}

    def forward(self, x, **extra):
        q, xs = _per_token(x)
        if self.holder == "vllm":
            ua = ub = TORCH_DEVICE_IDENTITY
        else:
            ua, ub = self.get("ua", extra), self.get("ub", extra)
        out = torch._scaled_mm(q, self.weight.t(), scale_a=ua, scale_b=ub, out_dtype=torch.float32)
        out = torch.narrow(out, 0, 0, x.shape[0])
        out = out * torch.narrow(xs, 0, 0, x.shape[0]) * self.weight_scale.t()
        if self.bias is not None:
            out = out + self.bias
        return out.to(torch.bfloat16).view(x.shape[0], -1)


class ScaledMmV2(nn.Module):
    """``torch.nn.functional.scaled_mm`` with RowWise recipes (traces to ``aten._scaled_mm_v2``)."""

    def __init__(self, seed=0):
        super().__init__()
        w, ws = _weight(seed)
        self.weight = nn.Parameter(w, requires_grad=False)
        self.weight_scale = nn.Parameter(ws.reshape(-1), requires_grad=False)
        self.inputs = {}

    def forward(self, x):
        from torch.nn.functional import ScalingType, scaled_mm

        q, xs = _per_token(x)
        return scaled_mm(q, self.weight.t(), xs, ScalingType.RowWise, self.weight_scale.view(1, -1),
                         ScalingType.RowWise, output_dtype=torch.bfloat16)


class WeightInput(nn.Module):
    """The fp8 weight itself is a graph input (a module-level global): nothing to freeze."""

    def __init__(self, key, seed=0):
        super().__init__()
        w, ws = _weight(seed)
        GLOBAL_TENSORS[key] = w
        self.key = key
        self.ws = nn.Parameter(ws, requires_grad=False)
        self.inputs = {}

    def forward(self, x):
        q, xs = _per_token(x)
        return torch._scaled_mm(q, GLOBAL_TENSORS[self.key].t(), scale_a=xs, scale_b=self.ws.t(), out_dtype=torch.bfloat16)


class PlainMLP(nn.Module):
    """No FP8 at all."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(K, N), nn.GELU(), nn.Linear(N, N))
        self.inputs = {}

    def forward(self, x):
        return self.net(x.float())


def _dynamo_traces_scaled_mm_v2() -> bool:
    # NOTE: Dynamo 2.11 cannot trace F.scaled_mm (a graph break); 2.13 can (hipbmm_inductor.compat).
    return tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 13)


# name -> (builder, input dtype, GEMMs the lowering rewrites)
ENTRIES: dict[str, tuple[Callable[[], nn.Module], torch.dtype, int]] = {
    "rowwise-param-bf16-bias": (lambda: Rowwise("param", "r1", bias=True, seed=1), torch.bfloat16, 1),
    "rowwise-buffer-bf16": (lambda: Rowwise("buffer", "r2", seed=2), torch.bfloat16, 1),
    "rowwise-attribute-bf16": (lambda: Rowwise("attribute", "r3", seed=3), torch.bfloat16, 1),
    "rowwise-global-bf16": (lambda: Rowwise("global", "r4", seed=4), torch.bfloat16, 1),
    "rowwise-input-bf16": (lambda: Rowwise("input", "r5", seed=5), torch.bfloat16, 1),
    "rowwise-param-fp16": (lambda: Rowwise("param", "r6", out_dtype=torch.float16, seed=6), torch.bfloat16, 0),
    "rowwise-buffer-fp32": (lambda: Rowwise("buffer", "r7", out_dtype=torch.float32, seed=7), torch.float32, 0),
    # Static per-tensor input scale on an fp32 model: the import once made this fail to compile.
    "pertensor-static-buffer-fp32": (lambda: PerTensor("buffer", "p1", torch.float32, static=True, seed=8), torch.float32, 0),
    "pertensor-static-attribute-bf16": (lambda: PerTensor("attribute", "p2", torch.bfloat16, static=True, seed=9), torch.bfloat16, 0),
    "pertensor-dynamic-param-fp16": (lambda: PerTensor("param", "p3", torch.float16, static=False, seed=10), torch.float16, 0),
    "pertensor-static-input-bf16": (lambda: PerTensor("input", "p4", torch.bfloat16, static=True, seed=11), torch.bfloat16, 0),
    "pertensor-static-global-fp32": (lambda: PerTensor("global", "p5", torch.float32, static=True, seed=12), torch.float32, 0),
    # Channelwise with its unit scale as a parameter / buffer / attribute: these also once crashed.
    "channelwise-unit-param": (lambda: Channelwise("param", "c1", seed=13), torch.bfloat16, 1),
    "channelwise-unit-buffer": (lambda: Channelwise("buffer", "c2", seed=14), torch.bfloat16, 1),
    "channelwise-unit-attribute": (lambda: Channelwise("attribute", "c3", bias=False, seed=15), torch.bfloat16, 1),
    "channelwise-unit-input": (lambda: Channelwise("input", "c4", seed=16), torch.bfloat16, 1),
    "channelwise-vllm-global": (lambda: Channelwise("vllm", "c5", seed=17), torch.bfloat16, 1),
    "channelwise-static-pertensor-buffer": (lambda: Channelwise("buffer", "c6", value=0.5, seed=18), torch.bfloat16, 1),
    "weight-is-graph-input": (lambda: WeightInput("w1", seed=19), torch.bfloat16, 0),
    "no-fp8": (lambda: PlainMLP(seed=20), torch.float32, 0),
}
if _dynamo_traces_scaled_mm_v2():
    ENTRIES["scaled_mm_v2-param-bf16"] = (lambda: ScaledMmV2(seed=21), torch.bfloat16, 1)


class Zoo(nn.Module):
    """Every entry in one module, so one compile covers the whole zoo (each entry is independent:
    its own weights, scales and input; the outputs come back by name)."""

    def __init__(self):
        super().__init__()
        self.entries = nn.ModuleDict({name.replace(".", "_"): make() for name, (make, _, _) in ENTRIES.items()})

    def forward(self, xs: dict, extras: dict) -> dict:
        return {name: self.entries[name](xs[name], **extras[name]) for name in xs}


def build():
    """The zoo (eval mode), its inputs by entry name, and each entry's keyword graph inputs."""
    zoo = Zoo().eval()
    xs = {name: torch.randn(M, K, generator=_gen(1000 + i)).to(dtype) for i, (name, (_, dtype, _)) in enumerate(ENTRIES.items())}
    extras = {name: dict(zoo.entries[name].inputs) for name in ENTRIES}
    return zoo, xs, extras


def compile_zoo() -> dict:
    """Compile the zoo with freezing under no_grad, as the lowering wants it; its outputs."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    zoo, xs, extras = build()
    with inductor_config.patch(freezing=True), torch.no_grad():
        return torch.compile(zoo)(xs, extras)


if __name__ == "__main__":
    outputs = compile_zoo()
    assert "hipbmm_inductor" not in sys.modules, "the package was imported"
    torch.save(outputs, sys.argv[1])
    print(f"compiled {len(outputs)} entries without hipbmm_inductor")
