"""Models quantised by torchao (``Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())``)
are rewritten: torchao's float8 linear is ``torch._scaled_mm`` with per-row scales on the
flattened activation, which the ``scaled_mm`` form takes.

torchao refuses float8 quantisation on the CPU (its ``_check_hardware_support`` asks for an
SM 8.9+ or MI300+ GPU). The CPU test bypasses that check and nothing else: the quantised tensors,
torchao's own linear and PyTorch's CPU ``_scaled_mm`` are the real ones. The GPU test runs
torchao unmodified.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import hipbmm_inductor
from hipbmm_inductor import lowering

from .conftest import assert_close_to_eager, compile_and_run, hipb_weight_operands

torchao = pytest.importorskip("torchao", reason="torchao is not installed (pip install -e '.[test]')")


def _model(device, dtype=torch.bfloat16):
    torch.manual_seed(0)
    # Two rewritable linears (N, K multiples of 16 / 32) around a nonlinearity, one with bias.
    return nn.Sequential(nn.Linear(256, 128, bias=True), nn.SiLU(), nn.Linear(128, 64, bias=False)).to(device, dtype).eval()


def _quantise(model):
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    return model


def _check(model, x):
    out, code, _ = compile_and_run(model, x)
    c = lowering.counters()
    assert c.forms["scaled_mm"].matched == 2 and c.forms["scaled_mm"].rewritten == 2, c.format()
    assert len(set(hipb_weight_operands(code))) == 2 and "_scaled_mm" not in code, code
    # NOTE: compared with Inductor's own compile of the same model (the lowering disabled), not
    # with eager: torchao's activation quantisation compiles to slightly different scales than it
    # computes eagerly (an fp8 rounding flip moves an output by ~1% of its row, with or without
    # this package: seen on the CPU). Against that compile the operands are the same fp8 values
    # and scales; both accumulate in fp32 and round once to bf16 (on the GPU the vendor side uses
    # torchao's default fast accumulation, whose extra error at K <= 256 stays far below
    # conftest's 2^-7 bound).
    torch._dynamo.reset()
    lowering.disable()
    plain = torch.compile(model)(x)
    lowering.enable()
    assert out.shape == plain.shape and out.dtype == plain.dtype
    assert_close_to_eager(out, plain)


def test_torchao_float8_per_row_is_rewritten_on_cpu(fresh, monkeypatch):
    import torchao.quantization.quant_api as quant_api

    # NOTE: the bypass. torchao asserts an SM 8.9+ / MI300+ GPU before quantising to float8.
    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)
    model = _quantise(_model("cpu"))
    assert type(model[0].weight).__name__ == "Float8Tensor", type(model[0].weight)
    # A 3-D activation: torchao flattens it to [B * S, K] and back around _scaled_mm.
    _check(model, torch.randn(3, 5, 256, dtype=torch.bfloat16))


def test_torchao_model_compiles_once_across_batch_sizes_on_cpu(fresh, monkeypatch):
    """docs/lowering.md's recipe with a torchao model: mark_dynamic gives a graph for M = 1 and
    one for every M >= 2 (tokens = batch x sequence here), both rewritten."""
    import torchao.quantization.quant_api as quant_api
    from torch._dynamo.testing import CompileCounterWithBackend

    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)  # as above
    model = _quantise(_model("cpu"))
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(model, backend=counter)
    for tokens in (1, 7, 2, 33):
        x = torch.randn(tokens, 256, dtype=torch.bfloat16)
        torch._dynamo.mark_dynamic(x, 0)
        out = compiled(x)
        assert out.shape == (tokens, 64)
    c = lowering.counters().forms["scaled_mm"]
    assert counter.frame_count == 2 and c.rewritten == 4 and c.matched == 4, (counter.frame_count, c)
    # Numerics of the dynamic graph against Inductor's own compile of it (see _check).
    x = torch.randn(5, 256, dtype=torch.bfloat16)
    torch._dynamo.mark_dynamic(x, 0)
    out = compiled(x)
    torch._dynamo.reset()
    lowering.disable()
    assert_close_to_eager(out, torch.compile(model)(x))
    lowering.enable()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_torchao_float8_per_row_is_rewritten_on_gpu(fresh):
    hipbmm_inductor.set_backend("triton")
    model = _quantise(_model("cuda"))
    _check(model, torch.randn(2, 7, 256, dtype=torch.bfloat16, device="cuda"))
