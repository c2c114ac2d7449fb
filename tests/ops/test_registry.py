"""Backend registry and selection: named backends fail loudly, auto falls back and says why."""

from __future__ import annotations

import logging

import pytest
import torch

import hipbmm_inductor as hi
from hipbmm_inductor import BackendUnavailableError, envs
from hipbmm_inductor.ops import registry
from hipbmm_inductor.ops.reference import reference_hipb_mm_fp8

from tests.support.inputs import make_case


class _Recording:
    """A backend that is usable or not on demand and records its calls."""

    def __init__(self, name, ok=True, reason="test backend"):
        self.name, self.ok, self.reason, self.calls = name, ok, reason, 0

    def availability(self, device):
        return registry.Availability(self.ok, self.reason)

    def is_fast(self, device):
        return True

    def run(self, A, B, scale_a, scale_b, bias, out_dtype):
        self.calls += 1
        return reference_hipb_mm_fp8(A, B, scale_a, scale_b, bias, out_dtype)


@pytest.fixture
def scratch_backend():
    saved = dict(registry._backends)
    yield
    registry._backends.clear()
    registry._backends.update(saved)
    registry.reset_selection()


def test_cpu_auto_is_reference():
    assert registry.backend_for(torch.device("cpu")).name == "reference"


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        hi.set_backend("nope")


def test_bad_env_value(monkeypatch):
    monkeypatch.setenv("HIPBMM_BACKEND", "cuBLAS")
    with pytest.raises(ValueError, match=r"HIPBMM_BACKEND='cublas': unknown backend; expected one of auto, reference, triton, aiter"):
        registry.backend_for(torch.device("cpu"))


def test_named_unusable_backend_fails_with_reason(scratch_backend):
    registry.register_backend(_Recording("toy", ok=False, reason="needs a toy GPU"))
    hi.set_backend("toy")
    case = make_case(3, 32, 64)
    with pytest.raises(BackendUnavailableError, match="HIPBMM_BACKEND=toy: .*needs a toy GPU"):
        hi.hipb_mm_fp8(*case.args)


def test_env_selects_backend(monkeypatch, scratch_backend):
    toy = registry.register_backend(_Recording("toy"))
    monkeypatch.setenv("HIPBMM_BACKEND", "toy")
    registry.reset_selection()
    hi.hipb_mm_fp8(*make_case(3, 32, 64).args)
    assert toy.calls == 1


def test_python_setting_wins_over_env(monkeypatch, scratch_backend):
    toy = registry.register_backend(_Recording("toy"))
    monkeypatch.setenv("HIPBMM_BACKEND", "reference")
    hi.set_backend("toy")
    hi.hipb_mm_fp8(*make_case(3, 32, 64).args)
    assert toy.calls == 1 and envs.HIPBMM_BACKEND == "toy"
    hi.set_backend(None)
    assert envs.HIPBMM_BACKEND == "reference"


def test_auto_falls_back_and_logs_once(monkeypatch, scratch_backend, caplog):
    first = registry.register_backend(_Recording("first", ok=False, reason="missing library"))
    second = registry.register_backend(_Recording("second"))
    monkeypatch.setattr(registry, "auto_order", lambda device: ["first", "second"])
    registry.reset_selection()
    with caplog.at_level(logging.INFO, logger="hipbmm_inductor"):
        for _ in range(3):
            hi.hipb_mm_fp8(*make_case(3, 32, 64).args)
    assert second.calls == 3 and first.calls == 0
    msgs = [r.getMessage() for r in caplog.records if "passed over" in r.getMessage()]
    assert len(msgs) == 1 and "first: missing library" in msgs[0]


def test_auto_with_nothing_usable(monkeypatch, scratch_backend):
    registry.register_backend(_Recording("first", ok=False, reason="r1"))
    monkeypatch.setattr(registry, "auto_order", lambda device: ["first"])
    registry.reset_selection()
    with pytest.raises(BackendUnavailableError, match="no hipb_mm_fp8 backend can run on cpu: first: r1"):
        registry.backend_for(torch.device("cpu"))


def test_probe_that_raises_is_a_reason(scratch_backend):
    class Broken(_Recording):
        def availability(self, device):
            raise OSError("driver crashed")

    registry.register_backend(Broken("broken"))
    av = registry.availability("broken", torch.device("cpu"))
    assert not av and "OSError: driver crashed" in av.reason


def test_register_rejects_incomplete():
    with pytest.raises(TypeError, match="has no 'run'"):
        registry.register_backend(type("X", (), {"name": "x", "availability": 1, "is_fast": 1})())


def test_auto_order_per_platform(monkeypatch):
    assert registry.auto_order(torch.device("cpu")) == ["reference"]
    monkeypatch.setattr(torch.version, "hip", None)
    assert registry.auto_order(torch.device("cuda", 0)) == ["triton", "reference"]
    monkeypatch.setattr(torch.version, "hip", "6.4")
    assert registry.auto_order(torch.device("cuda", 0)) == ["aiter", "triton", "reference"]


def test_a_bad_setting_read_by_a_probe_is_raised_not_passed_over(monkeypatch):
    """Under ``auto`` a probe that fails on a bad environment value must not quietly demote the
    backend: the user gets the variable's error (envs' one rule)."""
    class Probe:
        name = "probe-reads-env"

        def availability(self, device):
            return registry.Availability(bool(envs.HIPBMM_USE_AITER))

        def is_fast(self, device):
            return False

        def run(self, *args):
            raise AssertionError("not called")

    monkeypatch.setitem(registry._backends, Probe.name, Probe())  # gone again after the test
    monkeypatch.setenv("HIPBMM_USE_AITER", "maybe")
    with pytest.raises(ValueError, match="HIPBMM_USE_AITER='maybe'"):
        registry.availability("probe-reads-env", torch.device("cpu"))
    monkeypatch.setenv("HIPBMM_USE_AITER", "1")
    assert registry.availability("probe-reads-env", torch.device("cpu"))


@pytest.mark.parametrize("name", ["HIPBMM_USE_AITER", "TRITON_INTERPRET", "VLLM_ROCM_USE_AITER",
                                  "VLLM_ROCM_USE_AITER_LINEAR", "VLLM_ROCM_USE_AITER_LINEAR_HIPBMM"])
def test_a_setting_that_decides_auto_forgets_its_choice(name, scratch_backend):
    """`auto` memoises its backend per device; overriding a setting that changes which backends
    are usable (aiter's switches and vLLM's, the interpreter) makes the next call choose again."""
    registry._selected["sentinel"] = object()
    try:
        envs.set_override("HIPBMM_LOWERING", True)  # a setting that does not change what auto finds
        assert "sentinel" in registry._selected
        envs.set_override(name, True)
        assert "sentinel" not in registry._selected
    finally:
        envs.set_override(name, None)
        envs.set_override("HIPBMM_LOWERING", None)
        registry.reset_selection()
