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


@pytest.mark.parametrize("argv,needle", [
    (["--modes", ""], "--modes"),
    (["--tokens", "0"], "--tokens"),
    (["--backend", "triton"], "--backend triton cannot run"),  # no GPU, no interpreter: nothing would be rewritten
])
def test_block_bench_refuses_bad_arguments_in_one_line(argv, needle, tmp_path, capsys):
    if torch.cuda.is_available() and needle.startswith("--backend"):
        pytest.skip("checks the no-GPU answer")
    out = tmp_path / "b.json"
    assert cli.main(["bench", "--model", "tiny", "--iters", "1", "--repeats", "1", "--out", str(out), "--plot", "",
                     *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("text,rule", [("", "positive integers"), ("0,1", "positive integers"),
                                       ("1,x", "comma-separated integers"), ("1,,2", "empty item"),
                                       ("1,16,", "empty item"), (",1", "empty item"), (" , ", "empty item")])
def test_parse_ints_names_the_argument(text, rule):
    with pytest.raises(ValueError, match=f"--m: .*{rule}"):
        suites.parse_ints(text, "--m")


@pytest.mark.parametrize("text,ints", [("1", [1]), ("1,16,64", [1, 16, 64]), (" 1 , 16 ", [1, 16])])
def test_parse_ints_reads_what_it_is_given(text, ints):
    assert suites.parse_ints(text, "--m") == ints


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_cli_without_gpu_fails_with_one_line(capsys):
    assert cli.main(["bench", "--m", "1"]) == 2
    assert "bench: needs a GPU" in capsys.readouterr().err


def _result():
    recs = []
    for m in (1, 16):
        r = gemm.Record(N=64, K=64, M=m, bias=False, ours_us=2.0, baseline_us=3.0, floor_us=1.0,
                        compute_floor_us=0.1, speedup=1.5, floor_fraction=0.5, ours_tflops=1.0, baseline_tflops=0.7)
        recs.append(dataclasses.asdict(r))
    return {"device": "test", "backend": "triton", "geomean_speedup": 1.5, "records": recs}


def test_format_row_shows_speedup_and_floor_fraction():
    row = gemm.format_row(_result()["records"][0])
    assert "x 1.50" in row and "50.0%" in row


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from hipbmm_inductor.bench import plots  # needs matplotlib, the `bench` extra

    path = tmp_path / "b.png"
    plots.plot_gemm(_result(), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("N,K", [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (10240, 8192),
                                 (8192, 8192), (57344, 8192), (8192, 28672)])
@pytest.mark.parametrize("M", [1, 16, 64, 256, 1024, 4096])
def test_rotation_exceeds_three_l2s_of_fp8_bytes(M, N, K):
    """Every suite point's timed calls rotate over at least 3x H100's 50 MB L2 of the bytes
    an FP8 call touches: a weight is never still cached from its last use."""
    l2 = 50 << 20
    n = inputs.rotation(M, N, K, l2)
    assert 2 <= n <= 32
    assert n * (M * K + N * K + 2 * M * N) >= 3 * l2


def test_rotation_is_sized_by_the_fp8_call_only():
    # 4096 x 4096 at M = 1: 16.8 MB per call -> 10 sets (168 MB), where counting the bf16 copies
    # as well had given 2 sets (34 MB, inside L2).
    assert inputs.rotation(1, 4096, 4096, 50 << 20) == 10


@pytest.mark.parametrize("out,plot,expected", [
    ("results/run.json", None, "results/run.png"),   # beside the JSON by default
    ("bench.json", None, "bench.png"),
    ("run", None, "run.png"),
    ("", None, ""),                                   # no JSON asked for: no plot either
    ("results/run.json", "figs/x.png", "figs/x.png"),  # an explicit path wins
    ("results/run.json", "", ""),                     # and '' turns the plot off
])
def test_plot_path_follows_out(out, plot, expected):
    assert args.plot_path(out, plot) == expected


@pytest.mark.parametrize("out,plot", [("r.png", None), ("r.json", "r.json"), ("a/../r.json", "r.json")])
def test_plot_path_never_overwrites_the_json(out, plot):
    with pytest.raises(ValueError, match="--plot and --out name the same file"):
        args.plot_path(out, plot)
