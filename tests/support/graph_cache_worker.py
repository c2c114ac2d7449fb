"""Compiles in a fresh process, for test_cache.py: prints what each compile saw, one JSON line.

argv: settings ``enabled|disabled:BACKEND`` (``auto`` or a named backend), compiled in order, each
from a reset Dynamo; the FX graph cache location comes from ``TORCHINDUCTOR_CACHE_DIR``.
"""

import json
import sys

import torch
import torch._inductor.config as inductor_config
from torch._dynamo.utils import counters
from torch._inductor.utils import run_and_get_code

import hipbmm_inductor
from hipbmm_inductor.models import FP8Linear


def compile_once(state: str, backend: str) -> dict:
    torch._dynamo.reset()
    counters.clear()
    (hipbmm_inductor.enable if state == "enabled" else hipbmm_inductor.disable)()
    hipbmm_inductor.set_backend(backend)
    inductor_config.fx_graph_cache = True
    inductor_config.freezing = True
    m = FP8Linear(128, 64, form="scaled_mm", bias=True, seed=1).eval()
    x = torch.randn(8, 128, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = m(x)
        out, codes = run_and_get_code(torch.compile(m), x)
    code = "\n".join(line for c in codes for line in c.splitlines() if not line.lstrip().startswith("#"))
    return {
        "hipb": "hipb_mm_fp8" in code,
        "hit": counters["inductor"]["fxgraph_cache_hit"],
        "miss": counters["inductor"]["fxgraph_cache_miss"],
        "bypass": counters["inductor"]["fxgraph_cache_bypass"],
        "max_err": (out.float() - ref.float()).abs().max().item(),
    }


if __name__ == "__main__":
    print(json.dumps([compile_once(*arg.split(":")) for arg in sys.argv[1:]]))
