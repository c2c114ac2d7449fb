"""Markdown tables for docs/benchmarks.md from a ``bench`` JSON file; with several files (runs
of the same code), one row per run, how far the suite's figures move between runs, and a pooled
row of per-point medians.

    python benchmarks/tables.py benchmarks/results/h100/suite.json
    python benchmarks/tables.py benchmarks/results/h100/suite.json benchmarks/results/h100/suite_repeat_*.json
    python benchmarks/tables.py --shapes "llama3-8b;llama3-70b" benchmarks/results/h200/suite_v8_run*.json

``--shapes`` (as ``bench --shapes`` takes it: suite names or ``N,K`` pairs) keeps only those
weights' points: the rows per shape set that docs/benchmarks.md quotes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics


def _gm(xs) -> float:
    xs = list(xs)
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")  # nan: no such points in the run


_KEEP = None  # the (N, K) weights --shapes keeps; None: every point


def _load(path: str) -> dict:
    with open(path) as f:
        result = json.load(f)
    if not isinstance(result, dict) or not result.get("records"):
        raise SystemExit(f"{path}: not a bench result (no 'records'; write one with python -m hipbmm_inductor bench)")
    if _KEEP is not None:
        result["records"] = [x for x in result["records"] if (x["N"], x["K"]) in _KEEP]
        if not result["records"]:
            raise SystemExit(f"{path}: no point of the weights --shapes names")
    return result


def _row(name: str, recs: list[dict]) -> str:
    sp = [x["speedup"] for x in recs]

    def at(pred):  # "-" for an M bucket the run did not time (bench --m 1,16, say)
        bucket = [x["speedup"] for x in recs if pred(x["M"])]
        return f"x{_gm(bucket):.3f}" if bucket else "-"

    small = [x for x in recs if x["M"] <= 64]
    return (f"| {name} | x{_gm(sp):.3f} | x{min(sp):.3f} | {sum(s < 0.9 for s in sp)} | "
            f"{at(lambda m: m <= 16)} | {at(lambda m: m == 64)} | {at(lambda m: m == 256)} | "
            f"{at(lambda m: m >= 1024)} | {sum(x['floor_fraction'] >= 0.75 for x in small)} of {len(small)} |")


def runs(paths: list[str]) -> None:
    """One row per run, then a pooled row: each point's median speedup and floor fraction over
    the runs (a point that one run's clocks pushed below 0.9 counts by its typical value)."""
    print("| run | geomean | min | points < 0.9 | M <= 16 | M = 64 | M = 256 | M >= 1024 | M <= 64 at >= 75% of floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    geo, by_point, key_sets = [], {}, []
    for path in paths:
        recs = _load(path)["records"]
        keys = [(x["N"], x["K"], x["M"], x["bias"]) for x in recs]
        if len(set(keys)) != len(keys):
            raise SystemExit(f"{path}: a point appears twice")
        key_sets.append(set(keys))
        geo.append(_gm([x["speedup"] for x in recs]))
        print(_row(path.rsplit("/", 1)[-1], recs))
        for key, x in zip(keys, recs):
            by_point.setdefault(key, []).append(x)
    if len(paths) > 1:
        if any(k != key_sets[0] for k in key_sets):
            raise SystemExit("the runs do not hold the same points: no pooled row")
        pooled = [{"M": v[0]["M"], "speedup": statistics.median(x["speedup"] for x in v),
                   "floor_fraction": statistics.median(x["floor_fraction"] for x in v)} for v in by_point.values()]
        print(_row(f"pooled: per-point medians of {len(paths)} runs", pooled))
    print(f"\n{len(paths)} runs: geomean mean x{sum(geo) / len(geo):.3f}, range x{min(geo):.3f}-x{max(geo):.3f}")


def main(path: str) -> None:
    r = _load(path)
    recs = r["records"]
    print(f"{r['device']}, torch {r['torch']}, triton {r['triton']}; accumulation "
          f"{r.get('accumulation', 'promoted')}; baseline: {r.get('baseline', 'torch._scaled_mm rowwise')}")
    shapes = list(dict.fromkeys((x["N"], x["K"]) for x in recs))
    ms = sorted({x["M"] for x in recs})

    def get(n, k, m, bias):
        return next((x for x in recs if (x["N"], x["K"], x["M"], x["bias"]) == (n, k, m, bias)), None)

    def table(title, cols, cell, bias=False):
        if not any(x["bias"] == bias for x in recs):
            return  # e.g. a run with --bias no
        print(f"\n{title}\n")
        print("| N x K | " + " | ".join(f"M={m}" for m in cols) + " |")
        print("|---|" + "---|" * len(cols))
        for n, k in shapes:
            print(f"| {n} x {k} | " + " | ".join("-" if get(n, k, m, bias) is None else cell(get(n, k, m, bias))
                                               for m in cols) + " |")

    table("CUDA-graph medians, us, ours / _scaled_mm (speedup), no bias:", ms,
          lambda x: f"{x['ours_us']:.1f} / {x['baseline_us']:.1f} (x{x['speedup']:.2f})")
    table("With bias (bf16), speedup:", ms, lambda x: f"x{x['speedup']:.2f}", bias=True)
    table("Fraction of the memory floor at M <= 64 (no bias):", [m for m in ms if m <= 64],
          lambda x: f"{100 * x['floor_fraction']:.0f}% ({x['floor_us']:.1f} us)")
    plain = all(x.get("ours_plain_us") is not None for x in recs)
    if plain:
        table("Plain launches, us, ours / _scaled_mm, no bias:", ms,
              lambda x: f"{x['ours_plain_us']:.0f} / {x['baseline_plain_us']:.0f}")
    if all(x.get("linear_bf16_us") is not None for x in recs if not x["bias"]):
        table("bf16 F.linear, us (CUDA graphs, no bias):", ms, lambda x: f"{x['linear_bf16_us']:.1f}")
        wins = sum(x["ours_us"] < x["linear_bf16_us"] for x in recs if not x["bias"])
        print(f"\nours faster than bf16 F.linear at {wins} of {sum(1 for x in recs if not x['bias'])} points")

    sp = [x["speedup"] for x in recs]
    print(f"\ngeomean x{_gm(sp):.3f} (no bias x{_gm([x['speedup'] for x in recs if not x['bias']]):.3f}, "
          f"bias x{_gm([x['speedup'] for x in recs if x['bias']]):.3f}), min x{min(sp):.3f}; "
          f"M<=64 x{_gm([x['speedup'] for x in recs if x['M'] <= 64]):.3f} "
          f"(min x{min(x['speedup'] for x in recs if x['M'] <= 64):.3f}); "
          f"M=256 x{_gm([x['speedup'] for x in recs if x['M'] == 256]):.3f}; "
          f"M>=1024 x{_gm([x['speedup'] for x in recs if x['M'] >= 1024]):.3f}; "
          f"points < 0.9: {sum(x['speedup'] < 0.9 for x in recs)} of {len(recs)}"
          + (f"; plain geomean x{_gm([x['baseline_plain_us'] / x['ours_plain_us'] for x in recs]):.3f}" if plain else ""))
    small = [x for x in recs if x["M"] <= 64]
    print(f"M<=64 floor fraction: mean {sum(x['floor_fraction'] for x in small) / len(small):.2f}, "
          f">= 75%: {sum(x['floor_fraction'] >= 0.75 for x in small if not x['bias'])} of "
          f"{sum(1 for x in small if not x['bias'])} (no bias); max rel err "
          f"{max(x['max_rel_err'] for x in recs):.1e}; copy {r['copy_bandwidth_TBps']:.2f} TB/s, "
          f"fp8 peak {r['fp8_peak_TFLOPs']:.0f} TFLOP/s")
    big = [x for x in recs if x["M"] >= 1024]
    print(f"M>=1024 TFLOP/s: ours {min(x['ours_tflops'] for x in big):.0f}-{max(x['ours_tflops'] for x in big):.0f}, "
          f"baseline {min(x['baseline_tflops'] for x in big):.0f}-{max(x['baseline_tflops'] for x in big):.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Summarise bench result files: one file, a table; several, the runs side by side")
    parser.add_argument("files", nargs="+", help="bench --out JSON files")
    parser.add_argument("--shapes", help="only these weights: suite names or 'N,K' pairs, ';'-separated")
    args = parser.parse_args()
    if args.shapes is not None:
        import os
        import sys

        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a source checkout
        from hipbmm_inductor.bench.suites import parse_shapes

        try:
            _KEEP = set(parse_shapes(args.shapes))
        except ValueError as e:
            parser.error(str(e))
    try:
        runs(args.files) if len(args.files) > 1 else main(args.files[0])
    except (OSError, ValueError) as e:
        parser.exit(2, f"tables.py: error: {e}\n")
