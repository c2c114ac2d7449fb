"""Fixtures of the aiter backend's tests: ``platform`` (a simulated ROCm build on an MI3xx GPU,
with the recording stand-in as ``aiter``) and ``spied`` (that platform with ``tuning.choose``
counted)."""

from __future__ import annotations

import sys

import pytest
import torch

from hipbmm_inductor import envs, tuning
from hipbmm_inductor.ops import aiter_backend
from hipbmm_inductor.ops.aiter_backend import AiterBackend
from tests.support.aiter_shared import HIPBLASLT, ChooseSpy
from tests.support.aiter_standin import AiterStandIn
from tests.support.inputs import make_case


@pytest.fixture
def platform(monkeypatch):
    """Simulate a ROCm build of torch on an MI3xx GPU, with the stand-in as ``aiter``."""

    def install(arch: str = "gfx942", gpu_arch: str | None = None, **standin_kwargs) -> AiterStandIn:
        standin = AiterStandIn(arch=arch, **standin_kwargs)
        monkeypatch.setitem(sys.modules, "aiter", standin)
        monkeypatch.setattr(aiter_backend, "_is_rocm_build", lambda: True)
        monkeypatch.setattr(aiter_backend, "_gpu_arch", lambda device: gpu_arch or arch)
        monkeypatch.setattr(aiter_backend, "_hipblaslt_version", lambda: HIPBLASLT)
        aiter_backend.invalidate_plans()  # the registered backend's plans called an earlier stand-in
        return standin

    # Outside vLLM unless a test says otherwise (a vLLM test may have imported it in this process).
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    for name in ("HIPBMM_USE_AITER", "VLLM_ROCM_USE_AITER", "VLLM_ROCM_USE_AITER_LINEAR",
                 "VLLM_ROCM_USE_AITER_LINEAR_HIPBMM", "HIPBMM_BACKEND", "HIP_ONLINE_TUNING",
                 "HIPBMM_HIP_ONLINE_TUNING"):
        # setenv first: monkeypatch restores only what it recorded, and the backend itself may
        # write HIP_ONLINE_TUNING (forwarding HIPBMM_HIP_ONLINE_TUNING).
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)
    # Off unless a test says otherwise: with the default "cache" mode the answer would depend on
    # whatever the user's cache folder holds.
    tuning.set_mode("off")
    yield install
    tuning.set_mode(None)
    envs.set_override("HIPBMM_HIP_ONLINE_TUNING", None)
    aiter_backend.invalidate_plans()


@pytest.fixture
def spied(platform, monkeypatch):
    """An aiter backend on gfx942 whose tuner answers are counted, and one case to call it with."""
    platform("gfx942")
    spy = ChooseSpy({"solution_index": -1})
    monkeypatch.setattr(aiter_backend.tuning, "choose", spy)
    return spy, AiterBackend(), make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
