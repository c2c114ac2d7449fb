"""What ``auto`` routes to the Triton backend (``TritonBackend.is_fast_for``), by rule.

The rules are read off ``benchmarks/results/h200/`` (suites, sweep, block; docs/triton.md); these tests
pin the rules themselves (a change must be deliberate, with its ``routing_version`` bumped), and
that nothing routes where the Gluon kernel cannot run.
"""

from __future__ import annotations

import pytest
import torch
from torch._inductor import config as inductor_config

from hipbmm_inductor.ops.triton_backend import TritonBackend


@pytest.fixture
def sm90(monkeypatch):
    monkeypatch.setattr(TritonBackend, "_gluon_ready", staticmethod(lambda device: True))
    return TritonBackend()


@pytest.mark.parametrize("cudagraphs", [True, False])
@pytest.mark.parametrize("m,expected", [(1, True), (64, True), (65, False), (128, False), (256, False),
                                        (4096, False), (None, False)])
def test_static_m_up_to_64_in_every_compile_mode(sm90, m, expected, cudagraphs):
    with inductor_config.patch({"triton.cudagraphs": cudagraphs}):
        for n, k in ((4096, 4096), (28672, 4096), (128, 4096), (57344, 8192)):
            assert sm90.is_fast_for(torch.device("cuda"), n, k, m) is expected


def test_nothing_routes_where_the_gluon_kernel_cannot_run():
    be = TritonBackend()
    assert not be.is_fast(torch.device("cpu"))
    assert not be.is_fast_for(torch.device("cpu"), 28672, 4096, 1)
    assert "keeps the vendor GEMM" in be.describe_routing(torch.device("cpu"))
