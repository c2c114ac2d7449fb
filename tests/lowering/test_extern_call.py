"""The direct-call lowering of ``hipb_mm_fp8`` (lowering/extern_call.py).

On the CPU it is off (the op stays an opaque call); these tests turn it on by patching the
eligibility rule, so that the code Inductor generates on a GPU is compiled and run here too,
against the reference backend. The GPU run of the same lowering is in
tests/ops/test_triton_backend.py (the pass's GPU tests).
"""

from __future__ import annotations

import pytest
import torch

import hipbmm_inductor as hi
from hipbmm_inductor.lowering import extern_call
from hipbmm_inductor.models import FP8Linear
from hipbmm_inductor.ops.hipb_mm_fp8 import hipb_mm_fp8_out

from .conftest import assert_close_to_eager, call_body, compile_and_run, hipb_weight_operands


@pytest.fixture
def no_graph_cache():
    # A patched rule is not part of Inductor's cache key: a graph compiled under the other rule
    # (another test, an earlier run) must not be served from the FX graph cache.
    import torch._inductor.config as inductor_config

    with inductor_config.patch({"fx_graph_cache": False}):
        yield


@pytest.fixture
def direct(monkeypatch, no_graph_cache):
    monkeypatch.setattr(extern_call, "_direct_call", lambda device, out_dtype: True)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("form", ["scaled_mm", "channelwise"])
def test_direct_call_replaces_the_opaque_op_and_matches_eager(fresh, direct, form, bias):
    m = FP8Linear(256, 96, form=form, bias=bias, seed=5).eval()
    x = torch.randn(13, 256, dtype=torch.bfloat16)
    out, code, _ = compile_and_run(m, x)
    body = call_body(code)
    assert hi.lowering.counters().rewritten == 1
    assert "hipb_mm_fp8_out(" in body and "torch.ops.hipbmm.hipb_mm_fp8" not in body, body
    assert extern_call._IMPORT in code  # the generated module imports the entry itself
    # Inductor allocates the output; the op's own result asserts are gone with the opaque call.
    assert "assert_size_stride" not in body.split("hipb_mm_fp8_out(")[1].split("\n")[0]
    assert all(w.startswith(("_frozen_param", "constant")) for w in hipb_weight_operands(code))
    assert_close_to_eager(out, m(x))


def test_direct_call_is_off_on_the_cpu_by_default(fresh, no_graph_cache):
    m = FP8Linear(128, 64, seed=2).eval()
    x = torch.randn(4, 128, dtype=torch.bfloat16)
    out, code, _ = compile_and_run(m, x)
    assert "torch.ops.hipbmm.hipb_mm_fp8.default(" in code and "hipb_mm_fp8_out" not in code
    assert_close_to_eager(out, m(x))


def test_direct_call_with_dynamic_m(fresh, direct):
    # One graph for every M: the output buffer is sized by the symbolic M.
    m = FP8Linear(128, 256, bias=True, seed=8).eval()
    x = torch.randn(8, 128, dtype=torch.bfloat16)
    torch._dynamo.mark_dynamic(x, 0)
    out, code, compiled = compile_and_run(m, x)
    assert "hipb_mm_fp8_out(" in code
    assert_close_to_eager(out, m(x))
    for M in (1, 5, 33):
        y = torch.randn(M, 128, dtype=torch.bfloat16)
        assert_close_to_eager(compiled(y), m(y))


def test_out_entry_writes_into_the_given_buffer_for_every_backend_kind(monkeypatch):
    from tests.support.inputs import make_case

    c = make_case(5, 64, 128, bias_dtype=torch.bfloat16, device="cpu", seed=1)
    hi.set_backend("reference")
    try:
        ref = hi.hipb_mm_fp8(*c.args)
        out = torch.full_like(ref, float("nan"))
        # The reference backend returns its own result: the entry copies it into `out`.
        assert hipb_mm_fp8_out(c.A, c.B, c.scale_a, c.scale_b, c.bias, out) is out
        assert torch.equal(out, ref)
        # M = 0: nothing to launch, the empty buffer is the answer.
        empty = torch.empty(0, 64, dtype=torch.bfloat16)
        assert hipb_mm_fp8_out(c.A[:0], c.B, c.scale_a[:0], c.scale_b, c.bias, empty) is empty
    finally:
        hi.set_backend(None)


def test_ineligible_settings_keep_the_opaque_call(monkeypatch):
    # What the rule refuses, under a stand-in graph: the C++ wrapper, non-bf16, non-CUDA, ROCm, a
    # backend that returns its own output.
    class _Graph:
        cpp_wrapper = False
        aot_mode = False

    graph = _Graph()
    cuda = torch.device("cuda", 0)
    writes = type("B", (), {"writes_out": True})()
    monkeypatch.setattr(extern_call.registry, "backend_for", lambda d: writes)
    monkeypatch.setattr(torch.version, "hip", None)
    with extern_call.V.set_graph_handler(graph):
        assert extern_call._direct_call(cuda, torch.bfloat16)
        assert not extern_call._direct_call(torch.device("cpu"), torch.bfloat16)
        assert not extern_call._direct_call(cuda, torch.float32)
        graph.cpp_wrapper = True
        assert not extern_call._direct_call(cuda, torch.bfloat16)
        graph.cpp_wrapper = False
        monkeypatch.setattr(torch.version, "hip", "6.4")
        assert not extern_call._direct_call(cuda, torch.bfloat16)
        monkeypatch.setattr(torch.version, "hip", None)
        writes.writes_out = False
        assert not extern_call._direct_call(cuda, torch.bfloat16)


@pytest.mark.parametrize("spelling", ["positional", "keywords", "explicit_default"])
def test_op_called_by_model_code_gets_the_direct_call(fresh, monkeypatch, no_graph_cache, spelling):
    # A model (or vLLM's kernel) calling the op itself inside torch.compile: Inductor hands the
    # lowering normalised arguments, the default out_dtype as the schema's ScalarType number. The
    # rule must see the real dtype (the traced output's), and keywords must be read by name.
    seen = []
    monkeypatch.setattr(extern_call, "_direct_call", lambda device, out_dtype: seen.append(out_dtype) or True)
    from tests.support.inputs import make_case

    c = make_case(9, 64, 128, bias_dtype=torch.bfloat16, seed=2)
    op = torch.ops.hipbmm.hipb_mm_fp8

    def f(A, sa):
        if spelling == "positional":
            return op(A, c.B, sa, c.scale_b, c.bias) * 2
        if spelling == "keywords":
            return op(A, c.B, scale_a=sa, scale_b=c.scale_b, bias=c.bias) * 2
        return op(A, c.B, sa, c.scale_b, bias=c.bias, out_dtype=torch.bfloat16) * 2

    out, code, _ = compile_and_run(f, c.A, c.scale_a)
    assert seen and all(d is torch.bfloat16 for d in seen), seen
    assert "hipb_mm_fp8_out(" in call_body(code), code
    assert torch.equal(out, op(c.A, c.B, c.scale_a, c.scale_b, c.bias) * 2)  # x2 is exact in bf16


@pytest.mark.parametrize("bad", ["shape", "dtype", "strides", "none"])
def test_out_entry_names_a_bad_out_buffer(bad):
    # Not reachable from generated code (Inductor allocates the buffer to the op's fake result),
    # but the entry is importable: a wrong buffer is an error naming `out`, never garbage.
    from tests.support.inputs import make_case

    c = make_case(4, 64, 128, bias_dtype=None, seed=3)
    out = {"shape": torch.empty(1, 64, dtype=torch.bfloat16), "dtype": torch.empty(4, 64),
           "strides": torch.empty(64, 4, dtype=torch.bfloat16).t(), "none": None}[bad]
    hi.set_backend("reference")
    try:
        with pytest.raises(hi.HipbmmInputError, match="out"):
            hipb_mm_fp8_out(c.A, c.B, c.scale_a, c.scale_b, None, out)
    finally:
        hi.set_backend(None)
