"""Run vLLM's engine on a checkpoint and report what the FP8 linears ran on (a JSON file).

Used by ``test_vllm_e2e.py`` in a fresh subprocess per configuration: vLLM's kernel lists, its
plugin loading and its compile caches are process-wide, so each configuration gets its own
process. Environment (set by the test): ``HIPBMM_VLLM_ENABLE`` picks the configuration,
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` keeps the engine in this process so that the counter below
sees the calls. ``E2E_EAGER=1`` runs without compilation (for comparing eager and compiled
numerics by hand; the tests always compile).

    python -m tests.support.vllm_runner MODEL_DIR OUT_JSON
"""

from __future__ import annotations

import json
import os
import sys
import traceback

PROMPTS = ["w1 w2 w3 w4", "w10 w20 w30", "w7", "w100 w101 w102 w103 w104 w105"]
MAX_TOKENS = 8
TOP_LOGPROBS = 5

_OWN_FRAMES = (os.sep + "torch" + os.sep, os.sep + "hipbmm_inductor" + os.sep, os.sep + "ops" + os.sep)


def _count_op_calls(calls: list[str]) -> None:
    """Record, for every real hipb_mm_fp8 call, the file of the code that called the op.

    The op's implementation looks its backend up through ``backend_for`` on every call with
    M > 0; wrapping that name in the op module sees each call without changing what runs.
    """
    import importlib

    # (the package re-exports a function of the same name: import the module by its path)
    op_module = importlib.import_module("hipbmm_inductor.ops.hipb_mm_fp8")

    backend_for = op_module.backend_for

    def counted(device):
        caller = next(
            (f.filename for f in reversed(traceback.extract_stack()[:-1]) if not any(s in f.filename for s in _OWN_FRAMES)),
            "?",
        )
        calls.append(caller)
        return backend_for(device)

    op_module.backend_for = counted


def main(model: str, out: str) -> int:
    import torch

    calls: list[str] = []
    _count_op_calls(calls)

    from vllm import LLM, SamplingParams

    llm = LLM(
        model=model,
        tokenizer=model,
        dtype="bfloat16",
        max_model_len=128,
        max_num_seqs=4,
        max_num_batched_tokens=128,
        seed=0,
        enforce_eager=os.environ.get("E2E_EAGER") == "1",
        # NOTE: by default Inductor skips the bf16 rounding of intermediates it fuses (measured:
        # compiled logprobs differ from eager by up to ~1.4 nats here, with either kernel, while
        # eager runs of the two kernels agree bit for bit). Rounding as eager does makes the
        # comparison one of kernels, not of fusion decisions around them.
        compilation_config={"inductor_compile_config": {"emulate_precision_casts": True}},
    )

    def fp8_kernels(model):
        names = set()
        for module in model.modules():
            kernel = getattr(getattr(module, "scheme", None), "fp8_linear", None)
            if kernel is not None:
                names.add(type(kernel).__name__)
        return sorted(names)

    kernels = llm.apply_model(fp8_kernels)[0]
    warmup_calls = len(calls)
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, logprobs=TOP_LOGPROBS)
    outputs = llm.generate(PROMPTS, params)
    result = {
        "kernels": kernels,
        "op_calls_warmup": warmup_calls,
        "op_callers": sorted(set(calls[warmup_calls:])),
        "op_calls_generate": len(calls) - warmup_calls,
        "token_ids": [list(o.outputs[0].token_ids) for o in outputs],
        "texts": [o.outputs[0].text for o in outputs],
        # per prompt, per step: {token id: logprob} of the TOP_LOGPROBS most likely tokens
        "top_logprobs": [
            [{str(t): lp.logprob for t, lp in step.items()} for step in o.outputs[0].logprobs] for o in outputs
        ],
        "torch": torch.__version__,
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
