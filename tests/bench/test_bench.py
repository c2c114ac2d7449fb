"""``python -m hipbmm_inductor bench``: argument parsing, output formats (the timing itself needs a GPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hipbmm_inductor import cli
from hipbmm_inductor.bench import gemm, inputs, suites
from hipbmm_inductor.cli import args


def test_parse_shapes_accepts_suites_and_pairs():
    assert suites.parse_shapes("llama3-8b") == suites.SUITES["llama3-8b"]
    assert suites.parse_shapes("4096,4096; 8192x28672") == [(4096, 4096), (8192, 28672)]


@pytest.mark.parametrize("text", ["4096", "a,b", "llama9", ";", "", "100,4096", "4096,100", "0,4096", "-16,4096"])
def test_parse_shapes_names_the_argument(text):
    # Empty lists and weights the op cannot take are refused here, before any GPU work.
    with pytest.raises(ValueError, match="--shapes"):
        suites.parse_shapes(text)


def test_block_bench_on_the_cpu(tmp_path, capsys):
    # The tiny block on the reference backend: every linear rewritten, the JSON written. The
    # with/without outputs differ only in fp32 summation order before one bf16 rounding each
    # (both dequantise the same fp8 values), so their gap is a few bf16 steps of the output.
    import json

    out = tmp_path / "b.json"
    assert cli.main(["bench", "--model", "tiny", "--backend", "reference", "--modes", "default", "--tokens", "3",
                     "--iters", "1", "--repeats", "1", "--out", str(out), "--plot", ""]) == 0
    (rec,) = json.loads(out.read_text())["records"]
    assert rec["rewritten"] == 4 and rec["tokens"] == 3 and rec["mode"] == "default"
    assert rec["max_abs_diff"] < 0.5 and rec["with_rewrite_us"] > 0 and rec["without_rewrite_us"] > 0
    # One loop per variant per repeat, kept as the spread behind the medians; the queue-full
    # device time where the block ran on a GPU (bench takes one when present), none on the CPU.
    assert len(rec["samples_us"]["with"]) == len(rec["samples_us"]["without"]) == 1
    if torch.cuda.is_available():
        assert rec["with_rewrite_device_us"] > 0 and rec["device_speedup"] > 0
    else:
        assert rec["with_rewrite_device_us"] is None and rec["device_speedup"] is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_queued_time_is_the_device_time_when_the_host_is_slower():
    """A call whose host time (a 300 us Python spin) is far above its GPU time (a ~40 us GPU
    spin): the wall loop reads the host, the queue-full figure the GPU spin alone. The GPU spin's
    own length is measured independently, by events around 20 spins queued back to back (one
    spin alone after an idle moment runs at a lower clock); 15% covers launch gaps of a few us."""
    import time

    from hipbmm_inductor.bench import block

    per_us = block._spin_cycles_per_us()
    cycles = int(40 * per_us)

    def call():
        torch.cuda._sleep(cycles)
        end = time.perf_counter() + 300e-6
        while time.perf_counter() < end:
            pass

    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(cycles)
    start.record()
    for _ in range(20):
        torch.cuda._sleep(cycles)
    stop.record()
    stop.synchronize()
    gpu_us = start.elapsed_time(stop) * 1e3 / 20
    wall = block._time_us(call, 10, 3, torch.device("cuda"))
    queued = block._queued_us(call, 10, wall, per_us)
    assert wall > 250, wall
    assert 0.85 * gpu_us < queued < 1.15 * gpu_us + 5, (queued, gpu_us)
