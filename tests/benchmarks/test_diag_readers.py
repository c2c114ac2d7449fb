"""``benchmarks/diag_decode.py``'s readers, compiled for sm_90 on the CPU: every load of the weight
is a 16-byte vector load, as their docstring says (a share of no known alignment once made the
contiguous reader issue 4-byte loads, and look slower than the strided one)."""

from __future__ import annotations

import re

import pytest

from tests.support.bench_scripts import load_script

triton = pytest.importorskip("triton")
pytest.importorskip("triton.experimental.gluon")  # diag_decode imports the sm_90 kernel module

D = load_script("diag_decode.py")


@pytest.mark.parametrize("kernel", ["_read_kernel", "_read_strided_kernel"])
@pytest.mark.parametrize("per_sm,block,warps", D.READERS)
def test_readers_issue_only_16_byte_loads(kernel, per_sm, block, warps):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    # What Triton specialises at run time: 16-byte-aligned pointers, a word count divisible by 16
    # (every weight here has K % 32 == 0).
    attrs = {(i,): [["tt.divisibility", 16]] for i in (0, 1, 2)}
    src = ASTSource(getattr(D, kernel), {"src": "*i32", "out": "*i32", "n_words": "i32", "BLOCK": "constexpr"},
                    {"BLOCK": block}, attrs)
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps)).asm["ptx"]
    loads = re.findall(r"ld\.global\S*", ptx)
    assert loads and all(".v4." in ld for ld in loads), loads
