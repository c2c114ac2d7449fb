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
    assert re.search(r"latency \(median of 2\): eager [\d.]+ ms, compiled [\d.]+ ms", out), out


def test_demo_backend_and_sizes_per_device():
    """The demo opts in where auto would not rewrite: the reference oracle on the CPU, Triton on
    NVIDIA (auto keeps cuBLASLt there); on ROCm it leaves the choice to auto (aiter)."""
    import torch

    from hipbmm_inductor.demo import DEFAULT_SIZES, demo_backend

    assert demo_backend(torch.device("cpu"), None) == "reference"
    assert demo_backend(torch.device("cuda"), None) == "triton"
    assert demo_backend(torch.device("cuda"), "6.4.0") is None
    # The GPU default is a Llama-3-8B MLP at decode; every size meets the op's N % 16 and K % 32.
    for tokens, hidden, intermediate in DEFAULT_SIZES.values():
        assert tokens >= 1 and hidden % 32 == 0 and intermediate % 32 == 0
    assert DEFAULT_SIZES["cuda"] == (16, 4096, 14336)


def test_demo_cli_refuses_non_positive_sizes():
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIPBMM_")}
    res = subprocess.run([sys.executable, "-m", "hipbmm_inductor", "demo", "--tokens", "0", "--device", "cpu"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--tokens" in res.stderr and "positive integer" in res.stderr, res.stderr
