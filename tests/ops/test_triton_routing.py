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
    monkeypatch.setattr(TritonBackend, "_gluon_ready", staticmethod(lambda device, fp8=None: True))
    return TritonBackend()


@pytest.mark.parametrize("cudagraphs", [True, False])
@pytest.mark.parametrize("m,expected", [(1, True), (64, True), (65, False), (128, False), (256, False),
                                        (4096, False), (None, False)])
def test_static_m_up_to_64(sm90, m, expected, cudagraphs):
    with inductor_config.patch({"triton.cudagraphs": cudagraphs}):
        for n, k in ((4096, 4096), (28672, 4096), (57344, 8192)):
            assert sm90.is_fast_for(torch.device("cuda"), n, k, m) is expected


def test_without_graphs_only_shapes_one_gluon_launch_serves(sm90, monkeypatch):
    # The portable kernel's split-K launches twice and allocates a workspace: its host cost loses
    # in a graph launched from Python (h200/host_cost_compiled.json), so only CUDA graphs take it.
    from hipbmm_inductor.ops import triton_backend as TB
    from hipbmm_inductor.ops.triton_configs import make_config, make_hopper_config

    monkeypatch.setattr(TB, "_heuristic", lambda bucket, n, k, fast=False, hopper=False:
                        make_config(16, 32, 128, 4, 4, split_k=4) if n == 128 else make_hopper_config(64, 32, 256, 6))
    for cudagraphs, expected in ((True, True), (False, False)):
        with inductor_config.patch({"triton.cudagraphs": cudagraphs}):
            assert sm90.is_fast_for(torch.device("cuda"), 128, 4096, 1) is expected
            assert sm90.is_fast_for(torch.device("cuda"), 4096, 4096, 1) is True


def test_nothing_routes_where_the_gluon_kernel_cannot_run():
    be = TritonBackend()
    assert not be.is_fast(torch.device("cpu"))
    assert not be.is_fast_for(torch.device("cpu"), 28672, 4096, 1)
    assert "keeps the vendor GEMM" in be.describe_routing(torch.device("cpu"))
