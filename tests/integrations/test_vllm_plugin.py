"""The vLLM kernel class and plugin inside a real vLLM (0.32, CPU build): selection rules,
``can_implement``, load-time prepacking, and one layer against vLLM's own FP8 kernel."""

from __future__ import annotations

import json

import pytest

from tests.support.vllm_env import requires_vllm, spawn, wait

pytestmark = requires_vllm


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm_checks")
    out, log = tmp / "report.json", tmp / "log.txt"
    proc = spawn("tests.support.vllm_kernel_checks", str(out), env={}, log=log)
    wait(proc, log, timeout_s=600)
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    "case, reason",
    [
        ("k_mod_32_is_16", "K must be >= 32 and a multiple of 32"),
        ("n_below_16", "N must be >= 16"),
        ("fp16_out", "requires bfloat16 output"),
        ("per_tensor_weight", "requires per-channel weight scales"),
        ("static_activation", "requires dynamic per-token activation scales"),
    ],
)
def test_can_implement_rejects_with_reason(report, case, reason):
    ok, why = report["can_implement"][case]
    assert not ok and reason in why


def test_can_implement_accepts_per_token_per_channel(report):
    assert report["can_implement"]["ok"] == [True, None]


def test_vllm_own_hipbmm_kernel_misses_the_k_mod_32_rule(report):
    # The gap docs/contract.md, "aiter hipb_mm", describes, seen in vLLM 0.32 itself: K = 48 passes its check.
    assert report["can_implement"]["vllm_aiter_k_mod_32_is_16"][0] is True


def test_selection_follows_hipbmm_vllm_enable(report):
    sel = report["selection"]
    assert sel["platform"] == "PlatformEnum.CPU"
    assert sel["is_supported_0"][0] is False and "HIPBMM_VLLM_ENABLE=0" in sel["is_supported_0"][1]
    assert sel["is_supported_auto"][0] is False and "ROCm only" in sel["is_supported_auto"][1]
    assert sel["count_after_register_0"] == 0 and sel["count_after_register_auto"] == 0
    assert sel["is_supported_1"] == [True, None]
    assert sel["first_after_register_1"] == "HipbmmFp8ScaledMMLinearKernel"


def test_on_rocm_auto_declines_a_slow_backend_unless_named(report):
    # Auto on the CPU "device" picks the reference backend, which is never fast: a vLLM on ROCm
    # without aiter or Triton must keep its own kernels.
    declined, why = report["rocm_auto"]["backend_auto"]
    assert declined is False and "'reference' backend" in why
    assert report["rocm_auto"]["backend_reference"] == [True, None]


def test_register_is_idempotent_and_keeps_vllm_order(report):
    sel = report["selection"]
    assert sel["count_after_register_1"] == 1 and sel["count_after_second_register"] == 1
    assert sel["is_registered"] and sel["others_kept_in_order"]


def test_weights_prepacked_at_load_time(report):
    layer = report["layer"]
    # B = prepack_weight(W): the [K, N] view of the shuffled [N, K] checkpoint weight.
    assert layer["weight_shape"] == [160, 96] and layer["weight_strides"] == [1, 160]
    assert layer["weight_is_shuffled_checkpoint"]
    assert layer["weight_scale_shape"] == [1, 96]


def test_layer_matches_vllm_torch_kernel(report):
    layer = report["layer"]
    assert layer["out_shape"] == [3, 5, 96] and layer["out_dtype"] == "torch.bfloat16"
    # Within one bf16 ulp of vLLM's ChannelWiseTorchFP8ScaledMMLinearKernel everywhere (see the
    # checks module for why one ulp).
    assert layer["max_excess_over_one_ulp"] <= 0.0
