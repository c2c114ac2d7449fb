"""``benchmarks/tables.py`` over several runs: the per-run rows and the pooled row of per-point
medians that docs/benchmarks.md quotes against the suite targets."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

from tests.support.bench_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _run_file(path: Path, speedups: dict[tuple, float], floor: float = 0.8) -> None:
    recs = [{"N": n, "K": k, "M": m, "bias": b, "speedup": s, "floor_fraction": floor}
            for (n, k, m, b), s in speedups.items()]
    path.write_text(json.dumps({"records": recs}))


def _tables(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tables.py"), *map(str, paths)],
                          capture_output=True, text=True)


def test_pooled_row_is_the_geomean_of_per_point_medians(tmp_path):
    points = [(4096, 4096, 1, False), (4096, 4096, 4096, False), (8192, 8192, 64, True)]
    runs = [[1.5, 0.88, 1.2], [1.4, 0.95, 1.3], [1.6, 0.93, 1.1]]  # one run has a point below 0.9
    floors = [0.5, 0.76, 0.9]  # median 0.76 clears 0.75, the mean (0.72) would not
    files = []
    for i, sp in enumerate(runs):
        files.append(tmp_path / f"run{i}.json")
        _run_file(files[-1], dict(zip(points, sp)), floor=floors[i])
    out = _tables(*files)
    assert out.returncode == 0, out.stderr
    pooled = next(line for line in out.stdout.splitlines() if line.startswith("| pooled"))
    cells = [c.strip() for c in pooled.strip("|").split("|")]
    medians = [statistics.median(r[j] for r in runs) for j in range(len(points))]  # 1.5, 0.93, 1.2
    assert cells[1] == f"x{math.exp(sum(map(math.log, medians)) / 3):.3f}"
    assert cells[2] == "x0.930" and cells[3] == "0"  # the x0.88 run does not set the pooled minimum
    # Floor fractions pooled the same way: the median (0.76) at both M <= 64 points.
    assert cells[-1] == "2 of 2"
    rows = [line for line in out.stdout.splitlines() if line.startswith("| run0")]
    assert rows and rows[0].split("|")[4].strip() == "1"  # run0's own row keeps its point below 0.9


def test_runs_with_different_points_are_refused(tmp_path):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    _run_file(a, {(4096, 4096, 1, False): 1.2, (4096, 4096, 64, False): 1.1})
    _run_file(b, {(4096, 4096, 1, False): 1.2})
    _run_file(c, {(4096, 4096, 1, False): 1.2, (4096, 4096, 16, False): 1.1})  # as many points, other ones
    for pair in ((a, b), (a, c)):
        out = _tables(*pair)
        assert out.returncode != 0
        assert "the runs do not hold the same points" in out.stderr


def test_a_point_twice_in_one_run_is_refused(tmp_path):
    a = tmp_path / "a.json"
    rec = {"N": 16, "K": 32, "M": 1, "bias": False, "speedup": 1.0, "floor_fraction": 0.8}
    a.write_text(json.dumps({"records": [rec, rec]}))
    out = _tables(a, a)
    assert out.returncode != 0 and "a point appears twice" in out.stderr


def test_one_run_has_no_pooled_row(tmp_path, capsys):
    # From the command line one file prints the full tables instead; runs() with one file is the
    # library case: its row, and no pooled row (a median of one run is that run).
    tables = load_script("tables.py")
    f = tmp_path / "only.json"
    _run_file(f, {(4096, 4096, 1, False): 1.3})
    tables.runs([str(f)])
    out = capsys.readouterr().out
    assert "| only.json | x1.300 |" in out and "pooled" not in out


def test_a_file_that_is_not_a_bench_result_is_named(tmp_path):
    f = tmp_path / "sweep.json"
    f.write_text(json.dumps({"points": []}))  # a sweep or diag file, not bench's
    for args in ((f,), (f, f)):
        out = _tables(*args)
        assert out.returncode != 0 and "sweep.json: not a bench result" in out.stderr, out.stderr


def test_shapes_keeps_only_the_named_weights(tmp_path):
    """--shapes: the rows of one shape set (the docs' per-set figures), computed from its points
    alone; a name that is not a suite or N,K pair is refused by name."""
    points = {(4096, 4096, 1, False): 2.0, (4096, 4096, 256, False): 1.0, (8192, 8192, 1, False): 0.5}
    f = tmp_path / "run.json"
    _run_file(f, points)
    g = tmp_path / "run2.json"
    _run_file(g, points)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tables.py"), "--shapes", "4096,4096", str(f),
                          str(g)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    pooled = [c.strip() for c in next(line for line in out.stdout.splitlines()
                                      if line.startswith("| pooled")).strip("|").split("|")]
    assert pooled[1] == f"x{math.sqrt(2.0):.3f}" and pooled[2] == "x1.000", pooled  # 8192 x 8192's x0.5 left out
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tables.py"), "--shapes", "nosuch", str(f)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--shapes: expected 'N,K;N,K' or a suite" in bad.stderr, bad.stderr
