"""The pass's own failures, settings and silent no-ops: never a broken model, always a reason."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from hipbmm_inductor import envs, lowering
from hipbmm_inductor.models import FP8Linear
from hipbmm_inductor.lowering import checks, gemm, patterns
from hipbmm_inductor.lowering import rewrite as rewrite_mod

from .conftest import assert_close_to_eager, compile_and_run, hipb_weight_operands

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _boom(*args, **kwargs):
    raise RuntimeError("injected failure")


@pytest.mark.parametrize("where", ["check", "extract", "rewrite"])
def test_failure_inside_the_pass_is_logged_counted_and_leaves_the_graph(fresh, monkeypatch, caplog, where):
    if where == "check":
        monkeypatch.setattr(checks, "CHECKS", (checks.fp8_operands, _boom))
    elif where == "extract":
        monkeypatch.setattr(patterns, "_looks_per_channel", _boom)  # used by the channelwise extractor only
    else:
        # Fail half way through building the replacement: after the packed weight was inserted.
        monkeypatch.setattr(rewrite_mod, "_scale_b", _boom)
    m = FP8Linear(128, 64, form="channelwise", bias=True, seed=21).eval()
    x = torch.randn(9, 128, dtype=torch.bfloat16)
    ref = m(x)
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        out, code, _ = compile_and_run(m, x)
    c = lowering.counters()
    assert c.rewritten == 0, c.as_dict()
    assert any(r.startswith("internal error in the hipbmm pass") and "injected failure" in r for r in c.skipped), c.as_dict()
    assert any("injected failure" in r.getMessage() for r in caplog.records), caplog.text
    # Untouched: the vendor GEMM runs, nothing of the rewrite (packed weight included) is left.
    assert "hipb_mm_fp8" not in code and "_scaled_mm" in code and "shuffle_weight" not in code
    assert_close_to_eager(out, ref)


def _run(code: str, **env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIPBMM_", "TORCHINDUCTOR_"))}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


_PLAIN = """
import torch, hipbmm_inductor
import torch._inductor.config as c
c.freezing = True
m = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU()).eval()
x = torch.randn(4, 32)
with torch.no_grad():
    # fp32 throughout, the same math compiled and eager: only Inductor's summation order differs
    # (K = 32, |values| of order 1: a few fp32 ulps, ~1e-7), far inside 1e-5.
    assert torch.allclose(torch.compile(m)(x), m(x), atol=1e-5)
print("ok", hipbmm_inductor.lowering.counters().matched)
"""

_FP8 = """
import torch, hipbmm_inductor
import torch._inductor.config as c
from hipbmm_inductor.models import FP8Linear
c.freezing = True
m = FP8Linear(128, 64).eval()
with torch.no_grad():
    torch.compile(m)(torch.randn(4, 128, dtype=torch.bfloat16))
print("compiled")
"""

# Every hipbmm variable with a value whose rule it breaks.
_BAD = {name: "bogus" for name in envs.ENV_VARS if name.startswith("HIPBMM_") and name != "HIPBMM_TUNING_CACHE"}


def test_invalid_settings_never_break_a_model_without_fp8():
    res = _run(_PLAIN, **_BAD)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok 0"), res.stderr[-3000:]


@pytest.mark.parametrize("name,allowed", [("HIPBMM_LOWERING", "1/0, true/false"), ("HIPBMM_BACKEND", "expected one of auto")])
def test_invalid_setting_fails_where_a_candidate_needs_it(name, allowed):
    res = _run(_FP8, **{name: "bogus"})
    assert res.returncode != 0 and "compiled" not in res.stdout
    assert f"{name}='bogus'" in res.stderr and allowed in res.stderr, res.stderr[-3000:]
    assert "LoweringSettingError" in res.stderr, res.stderr[-3000:]


def test_fingerprint_never_raises_and_follows_the_value(monkeypatch):
    from hipbmm_inductor.lowering.inductor_pass import fingerprint

    monkeypatch.setenv("HIPBMM_LOWERING", "bogus")
    envs.set_override("HIPBMM_LOWERING", None)
    bad = fingerprint()
    monkeypatch.setenv("HIPBMM_LOWERING", "bogus2")
    assert fingerprint() != bad
    monkeypatch.setenv("HIPBMM_LOWERING", "1")
    assert fingerprint() != bad


@pytest.mark.parametrize("freezing,grad,reason", [
    (False, False, "freezing is False"),
    (True, True, "grad mode is on"),
    (False, True, "freezing is False"),
])
def test_no_freezing_is_reported_once_with_the_fix(fresh, caplog, freezing, grad, reason):
    import torch._inductor.config as inductor_config

    m = FP8MLPish().eval()
    x = torch.randn(5, 128, dtype=torch.bfloat16)
    ref = m(x)
    # Caches off: a compile served from Inductor's cache runs no pass (and so reports nothing).
    with inductor_config.patch(freezing=freezing, force_disable_caches=True), torch.set_grad_enabled(grad), \
            caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        out = torch.compile(m)(x)
    c = lowering.counters()
    assert c.rewritten == 0 and c.matched == 2, c.as_dict()
    assert {f: v["matched"] for f, v in c.as_dict().items()} == {"scaled_mm": 1, "scaled_mm_v2": 0, "channelwise": 1}
    (text, n), = c.skipped.items()
    assert reason in text and n == 2 and ("freezing = True" in text or "no_grad()" in text), c.skipped
    lines = [r for r in caplog.records if "not rewritten" in r.getMessage()]
    assert len(lines) == 1 and reason in lines[0].getMessage(), caplog.text
    assert_close_to_eager(out.detach(), ref.detach())


class FP8MLPish(nn.Module):
    """A rowwise and a channelwise linear: two candidates of different forms."""

    def __init__(self):
        super().__init__()
        self.a = FP8Linear(128, 128, form="scaled_mm", seed=31)
        self.b = FP8Linear(128, 64, form="channelwise", bias=True, seed=32)

    def forward(self, x):
        return self.b(self.a(x))


class SharedWeight(nn.Module):
    """One fp8 weight used by three GEMMs: a layer applied twice, then the channelwise form on it."""

    def __init__(self):
        super().__init__()
        self.lin = FP8Linear(128, 128, form="scaled_mm", seed=33)

    def forward(self, x):
        from hipbmm_inductor.models import quantize_per_token

        y = self.lin(self.lin(x))
        q, ys = quantize_per_token(y, self.lin.fp8)
        one = torch.ones(1, dtype=torch.float32)
        out = torch._scaled_mm(q, self.lin.weight.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
        return (out * ys * self.lin.weight_scale.t()).to(torch.bfloat16)


def test_shared_weight_is_packed_once(fresh):
    import torch._inductor.config as inductor_config

    from .test_patterns import _live_cpu_tensors

    m = SharedWeight().eval()
    x = torch.randn(6, 128, dtype=torch.bfloat16)
    ref = m(x)
    from hipbmm_inductor import prepack_weight

    expected = prepack_weight(m.lin.weight)
    with inductor_config.patch(freezing_discard_parameters=True):
        out, code, compiled = compile_and_run(m, x)
    c = lowering.counters()
    assert c.rewritten == 3, c.as_dict()
    weights = hipb_weight_operands(code)
    assert len(weights) == 3 and len(set(weights)) == 1, weights
    # Alive copies of the packed weight, other than our own `expected`: exactly the one constant.
    copies = {o.untyped_storage().data_ptr() for o in _live_cpu_tensors(torch.float8_e4m3fn)
              if o.shape == expected.shape and o.untyped_storage().data_ptr() != expected.untyped_storage().data_ptr()
              and torch.equal(o.view(torch.uint8), expected.view(torch.uint8))}
    assert len(copies) == 1, f"{len(copies)} packed copies of the shared weight alive"
    assert_close_to_eager(out, ref)


class _Routed:
    """A backend that routes by shape: fast only for N >= 128 (stands in for the real rules)."""

    name = "routed"
    routing_version = "v-test-1"

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def availability(self, device):
        return self.inner.availability(device)

    def is_fast(self, device):
        raise AssertionError("is_fast_for must be preferred when a backend has it")

    def is_fast_for(self, device, n, k, m):
        self.calls.append((device.type, n, k, m))
        return n >= 128

    def run(self, *args):
        return self.inner.run(*args)


def test_shape_routing_is_asked_and_keys_the_cache(fresh, monkeypatch):
    import hipbmm_inductor
    from hipbmm_inductor.lowering.inductor_pass import fingerprint
    from hipbmm_inductor.ops import registry

    if envs.is_set("HIPBMM_BACKEND") and not envs.is_overridden("HIPBMM_BACKEND"):
        pytest.skip("HIPBMM_BACKEND is set in the environment")
    routed = _Routed(registry.get_backend("reference"))
    hipbmm_inductor.set_backend(None)  # auto: the backend's own answer decides
    monkeypatch.setattr(registry, "backend_for", lambda device: routed)
    before = fingerprint()
    m = FP8MLPish().eval()
    x = torch.randn(5, 128, dtype=torch.bfloat16)
    out, code, _ = compile_and_run(m, x)
    c = lowering.counters()
    assert c.forms["scaled_mm"].rewritten == 1, c.as_dict()  # N = 128
    assert c.forms["channelwise"].rewritten == 0, c.as_dict()  # N = 64
    assert any("N=64, K=128, M=5" in r for r in c.skipped), c.skipped
    assert ("cpu", 128, 128, 5) in routed.calls and ("cpu", 64, 128, 5) in routed.calls, routed.calls
    routed.routing_version = "v-test-2"
    assert fingerprint() != before
    assert_close_to_eager(out, m(x))


@pytest.mark.parametrize("value,expected", [(1.0, True), (0.5, False)])
def test_unit_constant_is_read_outside_fake_mode(value, expected):
    """The freezing passes run under a FakeTensorMode; reading a real constant's value there is
    what FakeTensorMode refuses (the import once broke such models): the read must step out."""
    import torch.fx as fx
    from torch._subclasses.fake_tensor import FakeTensorMode

    root = nn.Module()
    root.register_buffer("unit", torch.tensor([value]))
    graph = fx.Graph()
    node = graph.get_attr("unit")
    graph.output(node)
    gm = fx.GraphModule(root, graph)
    mode = FakeTensorMode()
    with mode:
        assert gemm.is_unit_constant(gm, node) is expected
        fake = mode.from_tensor(torch.ones(1))
    gm.unit = fake  # a fake constant has no value to read: not known to be 1
    with mode:
        assert gemm.is_unit_constant(gm, node) is False
