"""Runs ``hipb_mm_fp8`` on the Triton backend (``TRITON_INTERPRET=1``) over a cache holding unusable
configs; see test_config_check. The interpreter must be on before triton is imported, hence a
fresh process.

Usage: python -m tests.support.interpret_bad_cache_worker OUT_JSON M [M ...]
(HIPBMM_TUNING_CACHE, HIPBMM_BACKEND=triton and TRITON_INTERPRET=1 set by the caller.)
"""

from __future__ import annotations

import json
import logging
import sys

from tests.support.triton_interpret_worker import _interpreter_broken  # sets TRITON_INTERPRET=1 first

from tests.support.inputs import assert_close_to_truth, make_case


def main(out_path: str, ms: list[int]) -> None:
    why = _interpreter_broken()
    if why:
        json.dump({"skip": why}, open(out_path, "w"))
        return
    import hipbmm_inductor as hi
    from hipbmm_inductor import tuning

    warnings: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    logging.getLogger("hipbmm_inductor").addHandler(Keep())
    for m in ms:
        case = make_case(m, 64, 128, bias_dtype=None, seed=m)  # no bias: the cached rows key on bias=none
        out = hi.hipb_mm_fp8(*case.args)  # raised KeyError: 'BLOCK_M' with {} cached
        assert_close_to_truth(out, case, f"M={m}")  # raises with the place if it is wrong
    json.dump({"warnings": warnings, "counters": tuning.counters()}, open(out_path, "w"))


if __name__ == "__main__":
    main(sys.argv[1], [int(m) for m in sys.argv[2:]])
