"""``python -m hipbmm_inductor demo`` runs end to end (small sizes, its own process, as in CI)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_cli_reports_rewrites_folding_and_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIPBMM_")}
    cmd = [sys.executable, "-m", "hipbmm_inductor", "demo", "--tokens", "16", "--hidden", "128",
           "--intermediate", "256", "--iters", "2", "--device", "cpu"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    for form in ("scaled_mm", "scaled_mm_v2", "channelwise"):
        assert f"{form}: matched 1, rewritten 1, skipped 0" in out, out
    assert "weights folded: True" in out and "shuffle_weight calls per run: 0" in out, out
    assert "hipb_mm_fp8 calls in generated code: 3" in out, out
    err, without = map(float, re.search(r"max \|compiled - eager\| = (\S+) .*without the rewrite: (\S+)", out).groups())
    # The rewrite adds no error of its own beyond Inductor's (see demo.run_demo): the reference
    # backend and CPU _scaled_mm both accumulate in fp32 and round once to bf16, so the two
    # compiled models differ by at most one bf16 rounding of the output, 2^-8 of |out| <= 8 here.
    assert abs(err - without) <= 2**-8 * 8, out
    assert "speed: not measured here" in out and "latency" not in out, out  # no CPU timing claims


def test_demo_backend_and_sizes_per_device():
    """The demo opts in where auto would not rewrite: the reference oracle on the CPU, Triton on
    NVIDIA (auto keeps cuBLASLt there); on ROCm it leaves the choice to auto (aiter)."""
    import torch

    from hipbmm_inductor.demo import demo_backend, demo_sizes

    assert demo_backend(torch.device("cpu"), None) == "reference"
    assert demo_backend(torch.device("cuda"), None) is None  # auto: what an unmodified deployment runs
    assert demo_backend(torch.device("cuda"), "6.4.0") is None
    assert demo_backend(torch.device("meta"), None) is None  # neither: auto decides (and explains)
    # Sizes not given take the device's defaults, given ones are kept: small on the CPU (an fp32
    # oracle), Llama-3-8B's MLP at decode on a GPU.
    assert demo_sizes(torch.device("cpu"), None, None, None) == (64, 256, 512)
    assert demo_sizes(torch.device("cuda"), None, None, None) == (16, 4096, 14336)
    assert demo_sizes(torch.device("cuda", 1), 3, None, 1024) == (3, 4096, 1024)


def test_demo_cli_refuses_non_positive_sizes():
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIPBMM_")}
    for arg in ("--tokens", "--iters"):
        res = subprocess.run([sys.executable, "-m", "hipbmm_inductor", "demo", arg, "0", "--device", "cpu"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and arg in res.stderr and "positive integer" in res.stderr, res.stderr
