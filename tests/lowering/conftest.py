"""Fixtures for the lowering tests: a clean Dynamo/Inductor state and the reference backend."""

from __future__ import annotations

import re

import pytest
import torch

import hipbmm_inductor
from hipbmm_inductor import lowering


@pytest.fixture
def fresh():
    """Freezing on, reference backend named explicitly (opts the pass in on the CPU), counters at 0."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    lowering.install()
    lowering.enable()
    lowering.reset_counters()
    hipbmm_inductor.set_backend("reference")
    with inductor_config.patch(freezing=True), torch.no_grad():
        yield
    hipbmm_inductor.set_backend(None)
    hipbmm_inductor.envs.set_override("HIPBMM_LOWERING", None)
    torch._dynamo.reset()


def code_calls(code: str) -> str:
    """Generated code without comment lines (they list the original ATen ops of fused nodes)."""
    return "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("#"))


def compile_and_run(model, *inputs, dynamic=None):
    from torch._inductor.utils import run_and_get_code

    compiled = torch.compile(model, dynamic=dynamic)
    out, codes = run_and_get_code(compiled, *inputs)
    return out, code_calls("\n".join(codes)), compiled


def _call_args(text: str) -> list[str]:
    """The top-level comma-separated arguments of the call whose "(" ``text`` starts after."""
    args, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            if depth == 0:
                break
            depth -= 1
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return args + [cur.strip()]


def hipb_weight_operands(code: str) -> list[str]:
    """The ``B`` argument of every ``hipb_mm_fp8`` call in the generated code."""
    return [_call_args(code[m.end():])[1] for m in re.finditer(r"(?:hipbmm\.hipb_mm_fp8\.default|\bhipb_mm_fp8_out)\(", code)]


def assert_close_to_eager(out, ref):
    # Both sides dequantise the same fp8 values and accumulate in fp32, then round once to bf16:
    # they differ by the fp32 summation order (~K * 2^-24 relative) plus at most one bf16 rounding
    # step (2^-8 relative to the element, bf16 has 8 significant bits). 2^-7 relative, with an
    # absolute floor of 2^-7 of the output's largest magnitude for elements near zero (where
    # cancellation makes the relative bound meaningless), covers both with a factor 2 of margin.
    ref = ref.float()
    torch.testing.assert_close(out.float(), ref, rtol=2**-7, atol=2**-7 * ref.abs().max().item())


def call_body(code: str) -> str:
    """The body of the generated ``call`` function: what runs on every call of the compiled module."""
    lines = code.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("def call("))
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    return "\n".join(body)


def pytest_collection_modifyitems(config, items):
    """Gate what older PyTorch cannot run (hipbmm_inductor/compat.py says why and where seen)."""
    from hipbmm_inductor.compat import CPU_ROWWISE_SCALED_MM, DYNAMO_TRACES_SCALED_MM_V2

    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if not str(item.fspath).startswith(here):
            continue
        if not CPU_ROWWISE_SCALED_MM and "gpu" not in item.keywords:
            # These tests compare against eager _scaled_mm on the CPU; GPU coverage of the pass on
            # such versions: tests/ops/test_triton_backend.py::test_gpu_lowering_pass_*.
            item.add_marker(pytest.mark.skip(reason=f"torch {torch.__version__}: no rowwise _scaled_mm on the CPU"))
        elif not DYNAMO_TRACES_SCALED_MM_V2 and "scaled_mm_v2" in item.name:
            item.add_marker(pytest.mark.skip(reason=f"torch {torch.__version__}: Dynamo cannot trace F.scaled_mm"))
