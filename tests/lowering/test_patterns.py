"""Each pattern form: numerics against eager, match counts, and the ops before and after.

"Before" is the eager module's op (``_scaled_mm`` / ``_scaled_mm_v2``, which Inductor keeps as an
extern call when it does not rewrite); "after" is the generated code of the compiled module.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from hipbmm_inductor import lowering
from hipbmm_inductor.models import FP8Linear, FP8MLP

from .conftest import assert_close_to_eager, call_body, compile_and_run, hipb_weight_operands

CASES = [
    # form, bias, use_fast_accum, scale layout of the weight scale
    ("scaled_mm", False, False, "n1"),  # 7 positional args
    ("scaled_mm", True, False, "n1"),
    ("scaled_mm", False, True, "n1"),  # 8 positional args
    ("scaled_mm", True, True, "1n"),
    ("scaled_mm", False, False, "flat"),  # 1-D scale viewed to [1, N]
    ("scaled_mm_v2", False, False, "n1"),
    ("scaled_mm_v2", True, True, "flat"),
    ("channelwise", False, False, "n1"),
    ("channelwise", True, False, "n1"),
    ("channelwise", True, True, "flat"),
]


@pytest.mark.parametrize("form,bias,fast_accum,layout", CASES)
def test_form_is_rewritten(fresh, form, bias, fast_accum, layout):
    m = FP8Linear(128, 64, bias=bias, form=form, use_fast_accum=fast_accum, scale_layout=layout, seed=7).eval()
    x = torch.randn(17, 128, dtype=torch.bfloat16)
    ref = m(x)
    out, code, _ = compile_and_run(m, x)

    c = lowering.counters()
    assert c.forms[form].matched == 1 and c.forms[form].rewritten == 1, c.as_dict()
    assert c.matched == 1, c.as_dict()  # the channelwise GEMM is not counted again by the rowwise form
    weights = hipb_weight_operands(code)
    assert len(weights) == 1, code
    assert "_scaled_mm" not in code and "shuffle_weight" not in code and "permute" not in code
    # Per call, the folded weight is only ever handed to the op: no kernel reads, copies or
    # transposes it first.
    assert call_body(code).count(weights[0]) == 1, call_body(code)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    assert_close_to_eager(out, ref)


def _live_cpu_tensors(dtype):
    """Every real (not fake, not meta) CPU tensor of ``dtype`` that the garbage collector tracks."""
    import gc

    gc.collect()
    out = []
    for o in gc.get_objects():
        try:
            if type(o) in (torch.Tensor, nn.Parameter) and o.device.type == "cpu" and o.dtype == dtype:
                out.append(o)
        except ReferenceError:  # dead weak proxies
            continue
    return out


def test_folded_weight_is_the_shuffled_transpose(fresh):
    """The constant the generated code passes is prepack_weight(W): strides (1, K), shuffled bytes."""
    from hipbmm_inductor import prepack_weight

    N, K = 256, 512
    m = FP8Linear(K, N, form="scaled_mm", seed=3).eval()
    x = torch.randn(4, K, dtype=torch.bfloat16)
    compile_and_run(m, x)
    expected = prepack_weight(m.weight)
    candidates = [
        o for o in _live_cpu_tensors(m.weight.dtype)
        if tuple(o.shape) == (K, N) and o.untyped_storage().data_ptr() not in (
            m.weight.untyped_storage().data_ptr(), expected.untyped_storage().data_ptr())
    ]
    folded = [o for o in candidates if o.stride() == (1, K) and torch.equal(o.view(torch.uint8), expected.view(torch.uint8))]
    assert folded, [(tuple(o.shape), o.stride()) for o in candidates]


def test_no_second_copy_of_the_weights(fresh):
    """With freezing_discard_parameters, the only full-size fp8 storage left is the shuffled one."""
    import torch._inductor.config as inductor_config

    N, K = 1024, 2048  # 2 MiB of fp8 weight: a stray copy would be plain to see
    m = FP8Linear(K, N, form="scaled_mm", seed=5).eval()
    x = torch.randn(8, K, dtype=torch.bfloat16)
    ref = m(x)
    with inductor_config.patch(freezing_discard_parameters=True):
        out, code, compiled = compile_and_run(m, x)
    storages = {
        o.untyped_storage().data_ptr()
        for o in _live_cpu_tensors(torch.float8_e4m3fn)
        if o.untyped_storage().nbytes() >= N * K
    }
    assert len(storages) == 1, f"{len(storages)} full-size fp8 weight storages alive"
    assert_close_to_eager(compiled(x), ref)


@pytest.mark.parametrize(
    "kwargs,x_dtype,reason",
    [
        (dict(in_features=144, out_features=64), torch.bfloat16, "K must be >= 32 and a multiple of 32"),  # K % 32 == 16
        (dict(in_features=128, out_features=24), torch.bfloat16, "N must be >= 16 and a multiple of 16"),
        (dict(in_features=128, out_features=64, out_dtype=torch.float16), torch.bfloat16, "out_dtype torch.float16"),
    ],
)
def test_unsupported_candidates_are_skipped_with_reason(fresh, kwargs, x_dtype, reason):
    m = FP8Linear(**kwargs, form="scaled_mm", seed=9).eval()
    x = torch.randn(5, kwargs["in_features"], dtype=x_dtype)
    ref = m(x)
    out, code, _ = compile_and_run(m, x)
    c = lowering.counters().forms["scaled_mm"]
    assert c.matched == 1 and c.rewritten == 0, c
    assert any(reason in r for r in c.skipped), dict(c.skipped)
    assert "hipb_mm_fp8" not in code and "_scaled_mm" in code
    assert_close_to_eager(out, ref)


class PerTensor(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(64, 128).to(torch.float8_e4m3fn), requires_grad=False)
        self.s = nn.Parameter(torch.tensor(0.01), requires_grad=False)

    def forward(self, x):
        xs = (x.abs().amax().float() / 448).clamp(min=1e-12)
        q = (x.float() / xs).to(torch.float8_e4m3fn)
        return torch._scaled_mm(q, self.w.t(), scale_a=xs, scale_b=self.s, out_dtype=torch.bfloat16)


def test_per_tensor_scales_are_skipped(fresh):
    m = PerTensor().eval()
    x = torch.randn(6, 128)
    ref = m(x)
    out, code, _ = compile_and_run(m, x)
    c = lowering.counters().forms["scaled_mm"]
    assert c.matched == 1 and c.rewritten == 0 and any("per-tensor" in r for r in c.skipped), dict(c.skipped)
    assert "hipb_mm_fp8" not in code
    assert_close_to_eager(out, ref)


def test_non_constant_weight_is_skipped(fresh):
    def f(x, w, ws):
        xs = x.abs().amax(-1, keepdim=True).float() / 448
        q = (x.float() / xs).to(torch.float8_e4m3fn)
        return torch._scaled_mm(q, w.t(), scale_a=xs, scale_b=ws.t(), out_dtype=torch.bfloat16)

    w = torch.randn(64, 128).to(torch.float8_e4m3fn)
    ws = torch.rand(64, 1) + 0.5
    x = torch.randn(8, 128)
    ref = f(x, w, ws)
    out, code, _ = compile_and_run(f, x, w, ws)
    c = lowering.counters().forms["scaled_mm"]
    assert c.rewritten == 0 and any("not a frozen constant" in r for r in c.skipped), dict(c.skipped)
    assert "hipb_mm_fp8" not in code
    assert_close_to_eager(out, ref)


def test_auto_backend_on_cpu_does_not_rewrite(fresh):
    """Importing the package must never make a model slower: the reference backend is not fast."""
    import hipbmm_inductor

    hipbmm_inductor.set_backend(None)  # back to the environment: HIPBMM_BACKEND unset = auto
    if hipbmm_inductor.envs.is_set("HIPBMM_BACKEND"):
        pytest.skip("HIPBMM_BACKEND is set in the environment")
    m = FP8Linear(128, 64, form="scaled_mm").eval()
    x = torch.randn(8, 128, dtype=torch.bfloat16)
    out, code, _ = compile_and_run(m, x)
    c = lowering.counters().forms["scaled_mm"]
    assert c.rewritten == 0 and any("not known to beat" in r for r in c.skipped), dict(c.skipped)
    assert "hipb_mm_fp8" not in code and "_scaled_mm" in code


def test_disabled_leaves_graph_untouched(fresh):
    lowering.disable()
    m = FP8Linear(128, 64, form="channelwise", bias=True).eval()
    x = torch.randn(8, 128, dtype=torch.bfloat16)
    ref = m(x)
    out, code, _ = compile_and_run(m, x)
    c = lowering.counters()
    assert c.rewritten == 0 and "hipb_mm_fp8" not in code and "_scaled_mm" in code
    assert any("disabled" in r for r in c.skipped), c.as_dict()
    assert_close_to_eager(out, ref)


def test_non_matching_graph_is_untouched(fresh):
    m = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 32)).eval()
    x = torch.randn(8, 64)
    ref = m(x)
    out, code, _ = compile_and_run(m, x)
    assert lowering.counters().matched == 0 and "hipb_mm_fp8" not in code
    torch.testing.assert_close(out, ref)  # fp32 model: Inductor's usual tolerance


def test_mlp_all_forms(fresh):
    m = FP8MLP(128, 256).eval()
    x = torch.randn(33, 128, dtype=torch.bfloat16)
    out, code, _ = compile_and_run(m, x)
    c = lowering.counters()
    assert {k: v["rewritten"] for k, v in c.as_dict().items()} == {"scaled_mm": 1, "scaled_mm_v2": 1, "channelwise": 1}
    assert len(hipb_weight_operands(code)) == 3
    # NOTE: Inductor fuses silu(gate) * up in fp32 where eager rounds it to bf16 before the next
    # quantisation; an fp8 rounding flip there moves the output by one fp8 step (2^-3 relative) of
    # one input. Compare with Inductor's own compile of the same model instead of a looser bound.
    torch._dynamo.reset()
    lowering.disable()
    plain = torch.compile(m)(x)
    assert_close_to_eager(out, plain)


_DYNAMIC_MS = (17, 1, 2, 111, 989, 4096)
# The graph counts below are PyTorch's behaviour: the GPU variants check them on the GPU image's
# PyTorch (2.11), the CPU ones on 2.13.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU")])]


def _dynamic_model(form, device):
    if device == "cuda":
        import hipbmm_inductor

        hipbmm_inductor.set_backend("triton")
    return FP8Linear(128, 64, form=form, bias=True, seed=11, device=device).eval()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", ["scaled_mm", "scaled_mm_v2", "channelwise"])
def test_mark_dynamic_gives_two_graphs_for_every_form(fresh, form, device):
    """README's recipe: ``mark_dynamic(x, 0)``: one graph for M = 1, one for every M >= 2, both
    rewritten. (M = 1 gets its own graph in every form: Dynamo specialises size-1 dimensions, and
    _scaled_mm's meta function guards on ``scale_a.numel() == 1``, which for [M, 1] scales is M == 1.)"""
    from torch._dynamo.testing import CompileCounterWithBackend

    m = _dynamic_model(form, device)
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(m, backend=counter)
    for M in _DYNAMIC_MS:
        x = torch.randn(M, 128, dtype=torch.bfloat16, device=device)
        torch._dynamo.mark_dynamic(x, 0)
        assert_close_to_eager(compiled(x), m(x))
    c = lowering.counters().forms[form]
    assert counter.frame_count == 2 and c.rewritten == 2 and c.matched == 2, (counter.frame_count, c)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", ["scaled_mm_v2", "channelwise"])
def test_mark_unbacked_gives_one_graph_where_pytorch_allows(fresh, form, device):
    """Unbacked M: one graph for every M, 1 included, for the forms whose GEMM has no [M, 1] scale
    argument checked by _scaled_mm's meta function."""
    from torch._dynamo.testing import CompileCounterWithBackend

    m = _dynamic_model(form, device)
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(m, backend=counter)
    for M in _DYNAMIC_MS:
        x = torch.randn(M, 128, dtype=torch.bfloat16, device=device)
        torch._dynamo.decorators.mark_unbacked(x, 0)
        assert_close_to_eager(compiled(x), m(x))
    c = lowering.counters().forms[form]
    assert counter.frame_count == 1 and c.rewritten == 1, (counter.frame_count, c)


@pytest.mark.parametrize("device", DEVICES)
def test_mark_unbacked_on_rowwise_scaled_mm_is_explained(fresh, device):
    """_scaled_mm's meta function guards on ``scale_a.numel() == 1``, a data-dependent guard for
    unbacked [M, 1] scales, so Dynamo runs that call outside the graph. The model still runs
    (eagerly there); the counters' summary names the cause and the fix."""
    m = _dynamic_model("scaled_mm", device)
    compiled = torch.compile(m)
    x = torch.randn(9, 128, dtype=torch.bfloat16, device=device)
    torch._dynamo.decorators.mark_unbacked(x, 0)
    assert_close_to_eager(compiled(x), m(x))
    c = lowering.counters()
    if c.matched:
        pytest.skip(f"torch {torch.__version__} traces _scaled_mm with unbacked M: the docs' note is obsolete")
    assert "mark_dynamic" in c.format() and "mark_unbacked" in c.format(), c.format()


class _Recorder:
    def __init__(self, tag):
        self.tag, self.calls = tag, 0

    def __call__(self, graph):
        self.calls += 1

    def uuid(self):
        return self.tag


def test_composes_with_users_custom_pass(fresh):
    import torch._inductor.config as inductor_config
    from torch._inductor.custom_graph_pass import CustomGraphPass

    from hipbmm_inductor.lowering.inductor_pass import HipbmmLoweringPass

    user = type("UserPass", (_Recorder, CustomGraphPass), {})("user-v1")
    post = type("UserPost", (_Recorder, CustomGraphPass), {})("post-v1")
    # fx_graph_cache off: a cache hit (from an earlier run) legitimately skips post-grad passes.
    with inductor_config.patch(joint_custom_pre_pass=user, post_grad_custom_post_pass=post, fx_graph_cache=False):
        ours = lowering.install()
        assert isinstance(inductor_config.joint_custom_pre_pass, HipbmmLoweringPass)
        assert ours.wrapped == [user] and inductor_config.post_grad_custom_post_pass is post
        assert lowering.install() is ours  # idempotent
        first = ours.uuid()
        user.tag = "user-v2"
        assert ours.uuid() != first  # the user's pass is part of the key
        m = FP8Linear(128, 64).eval()
        compile_and_run(m, torch.randn(4, 128, dtype=torch.bfloat16))
        assert user.calls >= 1 and post.calls >= 1
        assert lowering.counters().rewritten == 1
        user.uuid = lambda: None  # a pass without a uuid: Inductor must bypass the cache, as without us
        assert ours.uuid() is None
    lowering.install()


class PaddedChannelwise(nn.Module):
    """vLLM's channelwise path when the GEMM ran on padded rows: narrow(out, 0, 0, num_tokens)."""

    def __init__(self):
        super().__init__()
        self.lin = FP8Linear(128, 64, form="channelwise", bias=True, seed=13)

    def forward(self, x, num_tokens: int):
        from hipbmm_inductor.models import quantize_per_token

        lin = self.lin
        q, xs = quantize_per_token(x, lin.fp8)
        one = torch.ones(1, dtype=torch.float32)
        out = torch._scaled_mm(q, lin.weight.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
        out = torch.narrow(out, 0, 0, num_tokens)
        out = out * torch.narrow(xs, 0, 0, num_tokens) * lin.weight_scale.t()
        return (out + lin.bias).to(torch.bfloat16)


def test_channelwise_with_row_narrow(fresh):
    m = PaddedChannelwise().eval()
    x = torch.randn(16, 128, dtype=torch.bfloat16)
    ref = m(x, 11)
    out, code, _ = compile_and_run(m, x, 11)
    c = lowering.counters().forms["channelwise"]
    assert c.rewritten == 1, dict(c.skipped)
    assert out.shape == (11, 64) and "_scaled_mm" not in code
    assert_close_to_eager(out, ref)


class PaddedDynamic(nn.Module):
    """The same, with the row count taken from the input as vLLM does (``narrow(..., x.shape[0])``
    of rows padded past it): under dynamic shapes the narrowed count is a symbol of its own."""

    def __init__(self):
        super().__init__()
        self.lin = FP8Linear(128, 64, form="channelwise", bias=True, seed=17)

    def forward(self, x):
        from hipbmm_inductor.models import quantize_per_token

        lin, m = self.lin, x.shape[0]
        q, xs = quantize_per_token(torch.nn.functional.pad(x, (0, 0, 0, 17)), lin.fp8)
        one = torch.ones(1, dtype=torch.float32)
        out = torch._scaled_mm(q, lin.weight.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
        out = torch.narrow(out, 0, 0, m) * torch.narrow(xs, 0, 0, m) * lin.weight_scale.t()
        return (out + lin.bias).to(torch.bfloat16)


@pytest.mark.parametrize("dynamic", [False, True])
def test_channelwise_narrow_to_the_input_rows(fresh, dynamic):
    m = PaddedDynamic().eval()
    for rows in (4, 9):
        torch._dynamo.reset()
        lowering.reset_counters()
        x = torch.randn(rows, 128, dtype=torch.bfloat16)
        out, code, _ = compile_and_run(m, x, dynamic=dynamic)
        c = lowering.counters().forms["channelwise"]
        assert c.rewritten == 1, dict(c.skipped)
        assert out.shape == (rows, 64) and "_scaled_mm" not in code
        assert_close_to_eager(out, m(x))


class ChannelwiseVariant(nn.Module):
    """The channelwise chain written as client code varies it: the per-token scale computed in the
    graph as a product and multiplied first, or the bias added with ``alpha``."""

    def __init__(self, variant: str):
        super().__init__()
        self.lin = FP8Linear(128, 64, form="channelwise", bias=True, seed=19)
        self.variant = variant

    def forward(self, x):
        lin = self.lin
        fmax = torch.finfo(lin.fp8).max
        xs = x.abs().amax(-1, keepdim=True).float().clamp(min=1e-12) * (1.0 / fmax)  # a mul node
        q = (x.float() / xs).clamp(-fmax, fmax).to(lin.fp8)
        one = torch.ones(1, dtype=torch.float32)
        out = torch._scaled_mm(q, lin.weight.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
        if self.variant == "alpha":
            return torch.add(out * xs * lin.weight_scale.t(), lin.bias, alpha=2.0).to(torch.bfloat16)
        return ((xs * out) * lin.weight_scale.t() + lin.bias).to(torch.bfloat16)


def test_channelwise_scale_first_is_rewritten(fresh):
    m = ChannelwiseVariant("scale_first").eval()
    x = torch.randn(8, 128, dtype=torch.bfloat16)
    out, code, _ = compile_and_run(m, x)
    c = lowering.counters().forms["channelwise"]
    assert c.rewritten == 1, dict(c.skipped)
    assert "_scaled_mm" not in code
    assert_close_to_eager(out, m(x))


def test_channelwise_bias_with_alpha_is_skipped_not_dropped(fresh):
    m = ChannelwiseVariant("alpha").eval()
    x = torch.randn(8, 128, dtype=torch.bfloat16)
    out, code, _ = compile_and_run(m, x)
    c = lowering.counters().forms["channelwise"]
    assert c.rewritten == 0 and c.matched == 1
    assert any("alpha=2.0" in reason for reason in c.skipped), dict(c.skipped)
    assert lowering.counters().forms["scaled_mm"].matched == 0  # its GEMM is the chain's, counted once
    assert_close_to_eager(out, m(x))  # the graph as written: bias twice


def test_fp32_per_tensor_scaled_mm_says_no_chain_was_found(fresh):
    """An fp32 _scaled_mm with unit scales whose scaling the channelwise form does not take (a
    bias subtracted): the rowwise form's reason names that, not a per-token scale it never had."""

    class Sub(ChannelwiseVariant):
        def forward(self, x):
            lin = self.lin
            q = x.to(lin.fp8)
            xs = torch.ones(x.shape[0], 1)
            one = torch.ones(1, dtype=torch.float32)
            out = torch._scaled_mm(q, lin.weight.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
            return (out * xs * lin.weight_scale.t() - lin.bias).to(torch.bfloat16)

    m = Sub("sub").eval()
    x = torch.randn(8, 128, dtype=torch.bfloat16)
    out, _, _ = compile_and_run(m, x)
    c = lowering.counters().forms["scaled_mm"]
    assert c.rewritten == 0 and any("no channelwise chain" in r for r in c.skipped), dict(c.skipped)
    assert_close_to_eager(out, m(x))


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hipbmm_inductor.ops.validate import check_shape_supported  # noqa: E402


# Each example is a full Inductor compile (seconds on the CI machine): a tenth of the profile's
# example count, so `ci` runs 4 and `deep` 1000.
@settings(max_examples=max(3, settings.default.max_examples // 10),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
@given(
    n=st.sampled_from([16, 24, 48, 64, 208]),
    k=st.sampled_from([32, 48, 96, 144, 160]),
    m=st.integers(1, 40),
    form=st.sampled_from(["scaled_mm", "scaled_mm_v2", "channelwise"]),
    bias=st.booleans(),
)
def test_rewritten_exactly_when_supported(fresh, n, k, m, form, bias):
    torch._dynamo.reset()
    lowering.reset_counters()
    lin = FP8Linear(k, n, form=form, bias=bias, seed=n * k + m).eval()
    x = torch.randn(m, k, dtype=torch.bfloat16)
    ref = lin(x)
    out, code, _ = compile_and_run(lin, x)
    c = lowering.counters().forms[form]
    supported = check_shape_supported(n, k) is None
    assert c.matched == 1 and c.rewritten == int(supported), c
    assert ("hipb_mm_fp8" in code) == supported
    assert_close_to_eager(out, ref)


def test_one_set_of_form_names():
    # The counters' names (lowering/counters.py) are the patterns' and the models' spellings.
    import importlib

    from hipbmm_inductor import models
    from hipbmm_inductor.lowering import patterns

    counters_mod = importlib.import_module("hipbmm_inductor.lowering.counters")  # the name is also a function

    assert {f.name for f in patterns.FORMS} <= set(counters_mod.FORMS) == set(models.FORMS)
    assert set(lowering.counters().as_dict()) >= set(counters_mod.FORMS)
