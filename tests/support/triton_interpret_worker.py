"""Runs the Triton backend under ``TRITON_INTERPRET=1`` in a fresh process (see test_triton_backend).

Triton decides at ``@triton.jit`` time whether a kernel is interpreted, so the interpreter can
only be switched on before the kernel module is first imported. A child process gives the CPU
tests that guarantee whatever the parent pytest process imported before (GPU tests included).

Usage: ``python triton_interpret_worker.py CASES_JSON OUT_PT``. Each case is a dict of
``make_case`` arguments plus ``path``: ``op`` (the public op, backend forced to triton, tuning
off: the heuristic config), ``config`` (the launcher with an explicit config) or ``upcast`` (the
launcher with the fp16-widening path forced, as on GPUs without fp8 units for the flavour).
Writes ``{case_id: output}`` (or ``{"skip": reason}``) with ``torch.save``.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: see the docstring

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inputs import make_case  # noqa: E402


def _interpreter_broken() -> str | None:
    """Triton <= 3.6's interpreter turns scalar kernel arguments into 1-element numpy arrays and
    calls int() on them for loop bounds, which NumPy >= 2.4 rejects. Probe instead of guessing."""
    import triton
    import triton.language as tl

    @triton.jit
    def _probe(x_ptr, n):
        acc = 0.0
        for _ in range(0, n):
            acc += 1.0
        tl.store(x_ptr, acc)

    x = torch.zeros(1)
    try:
        _probe[(1,)](x, 2)
    except Exception as e:  # the interpreter itself cannot run a runtime-bounded loop
        return f"triton {triton.__version__}'s interpreter cannot run this kernel here ({type(e).__name__}: {e})"
    return None


def main(cases_path: str, out_path: str) -> None:
    why = _interpreter_broken()
    if why:
        torch.save({"skip": why}, out_path)
        return

    import hipbmm_inductor as hi
    from hipbmm_inductor import envs, tuning
    from hipbmm_inductor.ops import triton_configs as C
    from hipbmm_inductor.ops import triton_fp8_gemm as T

    hi.set_backend("triton")
    tuning.set_mode("off")
    native = T.native_fp8
    results = {}
    for case in json.load(open(cases_path)):
        bias = None if case["bias"] is None else getattr(torch, case["bias"])
        c = make_case(case["M"], case["N"], case["K"], getattr(torch, case["fp8"]), bias, seed=case["seed"])
        if case["path"] == "op":
            out = hi.hipb_mm_fp8(*c.args)
        elif case["path"] == "op_fast":
            envs.set_override("HIPBMM_TRITON_ACCUMULATION", "fast")
            try:
                out = hi.hipb_mm_fp8(*c.args)
            finally:
                envs.set_override("HIPBMM_TRITON_ACCUMULATION", None)
        elif case["path"] == "config":
            out = T.launch(case["config"], *c.args, fast_accum=case.get("fast_accum", False))
        elif case["path"] == "upcast":
            T.native_fp8 = lambda *a: False
            try:
                out = T.launch(C.heuristic_config(case["M"], case["N"], case["K"]), *c.args)
            finally:
                T.native_fp8 = native
        else:
            raise ValueError(f"unknown path {case['path']!r}")
        results[case["id"]] = out
    torch.save(results, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
