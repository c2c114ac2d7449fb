"""vLLM's engine on the CPU, compiled, with and without the plugin, on a tiny random FP8 Llama.

Two fresh processes run the same checkpoint and prompts (``vllm_runner``): one with
``HIPBMM_VLLM_ENABLE=1`` (the plugin puts its kernel first), one with ``=0`` (vLLM's own choice,
``ChannelWiseTorchFP8ScaledMMLinearKernel`` on CPUs without AMX-FP8). The plugin's kernel must be
the one selected, ``hipbmm::hipb_mm_fp8`` must be called from the code Inductor generated for
vLLM's compiled graph, and greedy decoding must agree. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import json

import pytest

from tests.support.tiny_fp8_llama import LAYERS, build
from tests.support.vllm_env import requires_vllm, spawn, wait
from tests.support.vllm_runner import MAX_TOKENS, PROMPTS

pytestmark = [requires_vllm, pytest.mark.slow]

# qkv_proj, o_proj, gate_up_proj, down_proj: vLLM merges q/k/v and gate/up into one GEMM each.
GEMMS_PER_FORWARD = 4 * LAYERS
OURS = "HipbmmFp8ScaledMMLinearKernel"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm_e2e")
    model = build(tmp / "model")
    procs = {}
    for name, enable in (("plugin", "1"), ("vllm", "0")):
        env = {
            "HIPBMM_VLLM_ENABLE": enable,
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine in the runner's process: its counter sees the calls
            "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the default would reserve far more than the model needs
            "VLLM_CACHE_ROOT": str(tmp / f"cache_{name}"),  # a cold compile, own to each run
            "TORCHINDUCTOR_CACHE_DIR": str(tmp / f"inductor_{name}"),
        }
        log = tmp / f"{name}.log"
        procs[name] = (spawn("tests.support.vllm_runner", str(model), str(tmp / f"{name}.json"), env=env, log=log), log)
    for proc, log in procs.values():
        wait(proc, log, timeout_s=900)
    return {name: json.loads((tmp / f"{name}.json").read_text()) | {"cache": str(tmp / f"cache_{name}")} for name in procs}


def test_plugin_kernel_is_selected(runs):
    assert runs["plugin"]["kernels"] == [OURS]
    assert runs["vllm"]["kernels"] and OURS not in runs["vllm"]["kernels"]


def test_hipb_mm_fp8_runs_inside_the_compiled_graph(runs):
    plugin = runs["plugin"]
    calls = plugin["op_calls_generate"]
    # One call per GEMM per forward pass, at least one forward per generated token.
    assert calls >= GEMMS_PER_FORWARD * MAX_TOKENS and calls % GEMMS_PER_FORWARD == 0, calls
    # Every call comes from the module Inductor generated into vLLM's compile cache, not from eager
    # Python (which would be vllm_kernel.py's apply_scaled_mm).
    assert plugin["op_callers"], plugin
    for caller in plugin["op_callers"]:
        assert caller.startswith(plugin["cache"]) and "inductor_cache" in caller, caller
    assert runs["vllm"]["op_calls_generate"] == 0


def test_greedy_outputs_agree(runs):
    ours, theirs = runs["plugin"], runs["vllm"]
    assert len(ours["token_ids"]) == len(PROMPTS)
    for o, t in zip(ours["token_ids"], theirs["token_ids"]):
        assert len(o) == MAX_TOKENS and len(set(o)) > 1, o  # a real continuation, not one repeated token
        assert o == t
    # Same top tokens with close log-probabilities at every step. The logits are bf16: at the
    # magnitudes here (16 to 32) one ulp is 0.125, so a one-ulp difference in a logit is allowed.
    for prompt_o, prompt_t in zip(ours["top_logprobs"], theirs["top_logprobs"]):
        for step_o, step_t in zip(prompt_o, prompt_t):
            top_o = max(step_o, key=step_o.get)
            assert top_o == max(step_t, key=step_t.get)
            assert abs(step_o[top_o] - step_t[top_o]) <= 0.13
