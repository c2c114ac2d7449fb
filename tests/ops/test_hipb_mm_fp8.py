"""The hipb_mm_fp8 op: numerics, fake-vs-real metadata, validation, opcheck, dynamic shapes."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing
from hypothesis import given
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import hipbmm_inductor as hi
from hipbmm_inductor.compat import CPU_ROWWISE_SCALED_MM
from hipbmm_inductor.ops.reference import reference_hipb_mm_fp8

from tests.support.inputs import FP8, error_bound, float64_oracle, make_case

OP = torch.ops.hipbmm.hipb_mm_fp8.default
BIAS = [None, torch.bfloat16, torch.float32]


def _assert_within_bound(out, case):
    err = (out.double() - float64_oracle(case)).abs()
    bound = error_bound(case)
    bad = err > bound
    if bad.any():
        m, n = bad.nonzero()[0].tolist()
        raise AssertionError(
            f"{int(bad.sum())} of {bad.numel()} elements outside the bound; first at [{m}, {n}]: "
            f"got {out[m, n].item()}, float64 {float64_oracle(case)[m, n].item()}, bound {bound[m, n].item()}"
        )


@pytest.mark.parametrize("fp8", FP8)
@pytest.mark.parametrize("bias_dtype", BIAS)
@pytest.mark.parametrize("M,N,K", [(1, 16, 32), (17, 48, 96), (111, 64, 256), (4, 256, 32)])
def test_numerics_vs_float64(M, N, K, fp8, bias_dtype):
    case = make_case(M, N, K, fp8, bias_dtype)
    out = hi.hipb_mm_fp8(*case.args)
    assert out.shape == (M, N) and out.dtype == torch.bfloat16 and out.is_contiguous()
    _assert_within_bound(out, case)


@given(
    M=st.integers(1, 64),
    N=st.integers(1, 8).map(lambda x: 16 * x),
    K=st.integers(1, 6).map(lambda x: 32 * x),
    fp8=st.sampled_from(FP8),
    bias_dtype=st.sampled_from(BIAS),
    seed=st.integers(0, 2**16),
)
def test_numerics_property(M, N, K, fp8, bias_dtype, seed):
    case = make_case(M, N, K, fp8, bias_dtype, seed=seed)
    _assert_within_bound(hi.hipb_mm_fp8(*case.args), case)


@pytest.mark.skipif(not CPU_ROWWISE_SCALED_MM, reason="no rowwise _scaled_mm on the CPU in this torch")
def test_matches_scaled_mm_on_plain_weight():
    """Same GEMM through PyTorch's own rowwise _scaled_mm on the unshuffled weight."""
    case = make_case(33, 64, 128, bias_dtype=torch.bfloat16)
    ours = hi.hipb_mm_fp8(*case.args)
    theirs = torch._scaled_mm(case.A, case.W.t(), scale_a=case.scale_a, scale_b=case.scale_b,
                              bias=case.bias, out_dtype=torch.bfloat16)
    # Both are fp32-accumulated and rounded once to bf16; summation order may differ. Each is
    # held to the float64 oracle's bound (one bf16 rounding plus the fp32 accumulation error).
    _assert_within_bound(theirs, case)
    _assert_within_bound(ours, case)
    # And to each other, tighter: their fp32 sums differ by at most twice the fp32 accumulation
    # error (K 2^-24 of the sum of |products|, scaled), so rounding them to bf16 lands on the same
    # or the adjacent value: one bf16 ulp (2^-7 relative, at the larger of the two) apart.
    gap = (ours.double() - theirs.double()).abs()
    absacc = case.A.double().abs() @ case.W.double().abs().t() * case.scale_a.double() * case.scale_b.double()
    accum = 2 * case.A.shape[1] * 2.0**-24 * absacc
    ulp = 2.0 ** (torch.maximum(ours.double().abs(), theirs.double().abs()).clamp_min(2.0**-126).log2().floor() - 7)
    assert (gap <= ulp + accum).all(), float((gap - ulp - accum).max())


def test_output_is_fresh():
    case = make_case(8, 32, 64)
    out = hi.hipb_mm_fp8(*case.args)
    for t in (case.A, case.B, case.scale_a, case.scale_b, case.bias):
        assert out.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()


def test_inputs_not_mutated_and_output_not_aliased():
    """What opcheck's test_schema checks; run by hand because it cannot run on CPU fp8 (below)."""
    case = make_case(8, 32, 64)
    before = [t.clone() for t in (case.A, case.B.t(), case.scale_a, case.scale_b, case.bias)]
    hi.hipb_mm_fp8(*case.args)
    after = (case.A, case.B.t(), case.scale_a, case.scale_b, case.bias)
    for b, a in zip(before, after):
        assert torch.equal(b.view(torch.uint8), a.view(torch.uint8))


def test_empty_m():
    case = make_case(1, 32, 64)
    A = case.A[:0]
    out = hi.hipb_mm_fp8(A, case.B, case.scale_a[:0], case.scale_b, case.bias)
    assert out.shape == (0, 32) and out.dtype == torch.bfloat16


def test_reference_backend_is_the_op():
    hi.set_backend("reference")
    case = make_case(9, 32, 64)
    assert torch.equal(hi.hipb_mm_fp8(*case.args), reference_hipb_mm_fp8(*case.args))


@pytest.mark.parametrize("bias_dtype", [None, torch.bfloat16])
def test_opcheck(bias_dtype):
    case = make_case(5, 32, 64, bias_dtype=bias_dtype)
    # NOTE: opcheck's test_schema fails inside PyTorch for any fp8 input on the CPU
    # ("mul_cpu_reduced_float" not implemented for 'Float8_e4m3fn' in SchemaCheckMode's
    # bitwise_equal; docs/contract.md, "PyTorch versions"). Its intent (no mutation, no aliasing) is checked by
    # test_inputs_not_mutated_and_output_not_aliased; the xfail below notices when PyTorch fixes it.
    torch.library.opcheck(OP, case.args, test_utils=("test_faketensor", "test_aot_dispatch_dynamic",
                                                      "test_autograd_registration"))


@pytest.mark.xfail(raises=Exception, strict=True, reason="PyTorch SchemaCheckMode cannot compare fp8 on CPU")
def test_opcheck_schema_known_pytorch_gap():
    case = make_case(5, 32, 64)
    torch.library.opcheck(OP, case.args, test_utils=("test_schema",))


# ---------------------------------------------------------------- fake vs real metadata


@given(
    M=st.integers(1, 3000),
    N=st.integers(1, 8).map(lambda x: 16 * x),
    K=st.integers(1, 4).map(lambda x: 32 * x),
    fp8=st.sampled_from(FP8),
    bias_dtype=st.sampled_from(BIAS),
)
def test_fake_matches_real(M, N, K, fp8, bias_dtype):
    case = make_case(M, N, K, fp8, bias_dtype)
    real = OP(*case.args)
    with FakeTensorMode() as mode:
        fake = OP(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in case.args])
    assert (fake.shape, fake.stride(), fake.dtype, fake.device) == (
        real.shape, real.stride(), real.dtype, real.device)


def test_fake_with_symbolic_m_does_not_specialise():
    case = make_case(7, 32, 64)
    shape_env = ShapeEnv()
    with FakeTensorMode(shape_env=shape_env) as mode:
        from torch._dynamo.source import ConstantSource
        from torch.fx.experimental.symbolic_shapes import DimDynamic, StatelessSymbolicContext

        ctx = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.DYNAMIC, DimDynamic.STATIC],
                                       dynamic_strides=[DimDynamic.INFER_STRIDE] * 2)
        A = mode.from_tensor(case.A, symbolic_context=ctx, source=ConstantSource("A"))
        sa = mode.from_tensor(case.scale_a, symbolic_context=ctx, source=ConstantSource("sa"))
        B = mode.from_tensor(case.B)
        sb = mode.from_tensor(case.scale_b)
        m_symbols = {A.shape[0].node.expr, sa.shape[0].node.expr}
        out = OP(A, B, sa, sb, None, torch.bfloat16)
    assert isinstance(out.shape[0], torch.SymInt) and out.shape[0].node.expr.free_symbols
    assert out.shape[1] == 32 and out.stride() == (32, 1)
    # Guards may tie sa's M to A's M (and pin strides, which are K), but every guard on M must
    # hold for other values of M too.
    on_m = [g.expr for g in shape_env.guards if g.expr.free_symbols & m_symbols]
    assert on_m, "expected at least the A/scale_a M-equality guard"
    for other_m in (2, 8, 4096):
        for expr in on_m:
            assert expr.subs({s: other_m for s in m_symbols}), expr


def test_dynamic_compile_serves_many_m():
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    fn = torch.compile(lambda A, B, sa, sb: hi.hipb_mm_fp8(A, B, sa, sb), backend=counter,
                       dynamic=True, fullgraph=True)
    for M in (2, 3, 17, 64, 300):
        c = make_case(M, 64, 128, bias_dtype=None, seed=M)
        out = fn(c.A, c.B, c.scale_a, c.scale_b)
        assert out.shape == (M, 64)
        _assert_within_bound(out, c)
    assert counter.frame_count == 1


def test_unbacked_m_serves_one_and_up():
    """Dynamo specialises sizes 0 and 1; an unbacked M keeps one graph for M = 1 as well."""
    from torch._dynamo.decorators import mark_unbacked

    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    fn = torch.compile(lambda A, B, sa, sb: hi.hipb_mm_fp8(A, B, sa, sb), backend=counter, fullgraph=True)
    W = make_case(1, 32, 64).W
    for M in (1, 5, 40):
        c = make_case(M, 32, 64, seed=M)
        c.W, c.B, c.bias = W, hi.prepack_weight(W), None
        mark_unbacked(c.A, 0)
        mark_unbacked(c.scale_a, 0)
        _assert_within_bound(fn(c.A, c.B, c.scale_a, c.scale_b), c)
    assert counter.frame_count == 1


class _SeesOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not torch.version.hip else [])


@pytest.mark.parametrize("device", _DEVICES)
def test_python_entry_goes_through_the_op_whenever_something_needs_the_dispatcher(device):
    # A plain eager call on GPU tensors runs the op's kernel directly (ops/hipb_mm_fp8.py says
    # why); modes, fake tensors, the profiler and grad still see the op, with the same result.
    if device == "cuda":
        hi.set_backend("triton")
    try:
        case = make_case(5, 64, 128, bias_dtype=torch.bfloat16, device=device, seed=3)
        plain = hi.hipb_mm_fp8(*case.args)
        with _SeesOps() as mode:
            seen = hi.hipb_mm_fp8(*case.args)
        assert OP in mode.seen and torch.equal(seen, plain)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            profiled = hi.hipb_mm_fp8(*case.args)
        assert any(e.name == "hipbmm::hipb_mm_fp8" for e in prof.events()) and torch.equal(profiled, plain)
        with FakeTensorMode(allow_non_fake_inputs=True) as fake_mode:
            fakes = [fake_mode.from_tensor(t) if t is not None else None for t in case.args[:5]]
            out = hi.hipb_mm_fp8(*fakes)
        assert out.shape == plain.shape and out.dtype == plain.dtype
        scale = case.scale_a.clone().requires_grad_(True)
        via_entry = hi.hipb_mm_fp8(case.A, case.B, scale, case.scale_b, case.bias)
        via_op = OP(case.A, case.B, scale, case.scale_b, case.bias)
        assert via_entry.requires_grad == via_op.requires_grad and torch.equal(via_entry, via_op)
        _assert_within_bound(plain.cpu(), make_case(5, 64, 128, bias_dtype=torch.bfloat16, seed=3))
    finally:
        hi.set_backend(None)


@pytest.mark.parametrize("device", _DEVICES)
def test_python_entry_rejects_bad_input_like_the_op(device):
    case = make_case(5, 64, 128, bias_dtype=None, device=device, seed=4)
    bad = (case.A, case.B, case.scale_a.t(), case.scale_b)  # [1, M] per-token scales
    with pytest.raises(hi.HipbmmInputError) as via_entry:
        hi.hipb_mm_fp8(*bad)
    with pytest.raises(hi.HipbmmInputError) as via_op:
        OP(*bad)
    assert str(via_entry.value) == str(via_op.value) and "scale_a" in str(via_entry.value)


@pytest.fixture
def direct_on_cpu(monkeypatch):
    """The eager direct path, which runs on GPUs, enabled for CPU tensors (reference backend)."""
    import importlib

    module = importlib.import_module("hipbmm_inductor.ops.hipb_mm_fp8")  # the package exports the function
    monkeypatch.setattr(module, "DIRECT_ALSO", {"cpu"})
    return module


def test_direct_path_skips_the_dispatcher_only_when_nothing_needs_it(direct_on_cpu, monkeypatch):
    case = make_case(6, 64, 128, bias_dtype=torch.bfloat16, seed=7)
    via_op = OP(*case.args[:5])
    calls = []
    real = direct_on_cpu._op
    monkeypatch.setattr(direct_on_cpu, "_op", lambda *a: calls.append(a) or real(*a))
    assert torch.equal(hi.hipb_mm_fp8(*case.args[:5]), via_op) and not calls  # direct
    with _SeesOps():
        hi.hipb_mm_fp8(*case.args[:5])
    assert len(calls) == 1  # a dispatch mode: through the op


def test_direct_path_leaves_jit_tracing_to_the_op(direct_on_cpu):
    # torch.jit.trace records dispatcher calls: a direct call would leave the GEMM out of the trace.
    case = make_case(6, 64, 128, bias_dtype=None, seed=8)
    traced = torch.jit.trace(lambda A, B, sa, sb: hi.hipb_mm_fp8(A, B, sa, sb), case.args[:4], check_trace=False)
    assert "hipbmm::hipb_mm_fp8" in str(traced.graph)
    other = make_case(6, 64, 128, bias_dtype=None, seed=9)
    assert torch.equal(traced(other.A, case.B, other.scale_a, case.scale_b),
                       OP(other.A, case.B, other.scale_a, case.scale_b))


def test_direct_path_keeps_autograd_parity(direct_on_cpu):
    # An fp8 weight held as an nn.Parameter requires grad by default: under grad mode the call
    # must give what the op gives (autograd's fallback marks the output as requiring grad).
    case = make_case(6, 64, 128, bias_dtype=None, seed=10)
    B = torch.nn.Parameter(case.B)
    assert B.requires_grad
    assert hi.hipb_mm_fp8(case.A, B, case.scale_a, case.scale_b).requires_grad == \
        OP(case.A, B, case.scale_a, case.scale_b).requires_grad
    with torch.no_grad():
        assert not hi.hipb_mm_fp8(case.A, B, case.scale_a, case.scale_b).requires_grad


@pytest.mark.parametrize("bad,arg", [(dict(A=[1.0]), "A"), (dict(scale_a=1.0), "scale_a"), (dict(bias=1.0), "bias"),
                                     (dict(out_dtype=None), "out_dtype"), (dict(out_dtype="bfloat16"), "out_dtype")])
def test_entry_names_a_non_tensor_argument(bad, arg):
    # The dispatcher would answer with its schema error; the entry names the argument and the rule.
    case = make_case(2, 32, 64)
    args = dict(A=case.A, B=case.B, scale_a=case.scale_a, scale_b=case.scale_b, bias=None, out_dtype=torch.bfloat16)
    args.update(bad)
    with pytest.raises(hi.HipbmmInputError, match=rf"^{arg}: "):
        hi.hipb_mm_fp8(**args)


def test_entry_takes_a_scalar_type_code_as_the_op_does():
    # 15 is bfloat16's ScalarType code, which the op's schema accepts (vLLM's graphs pass it so).
    case = make_case(2, 32, 64)
    assert torch.equal(hi.hipb_mm_fp8(*case.args[:4], None, 15), OP(*case.args[:4]))


@pytest.mark.parametrize("code", [999, -3, True])
def test_entry_names_out_dtype_for_an_int_that_is_no_scalar_type(code):
    # 999 and -3 are no ScalarType code (the dispatcher says "unsupported scalarType"); True is
    # not a code at all, though Python calls it an int (it would be read as 1, torch.int8).
    case = make_case(2, 32, 64)
    with pytest.raises(hi.HipbmmInputError, match=r"^out_dtype: "):
        hi.hipb_mm_fp8(*case.args[:4], None, code)
