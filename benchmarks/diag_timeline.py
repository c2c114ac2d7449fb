"""Where a decode launch's time goes, phase by phase: the sm_90 kernel with ``%globaltimer``
stamps per program. A diagnostic behind the memory-floor target at M <= 64 (docs/benchmarks.md).

The probe is the shipped ``ops/triton_fp8_hopper.py`` with stamps inserted at named places of
its text (:func:`probe_source`; it fails, naming the place, when the kernel's text has moved),
loaded beside it. Each program writes, in nanoseconds of the GPU's global timer:

- ``entry``: its first instruction; ``init``: its mbarriers initialised; ``issued``: the first
  tile's first stages issued (before the partitions start); ``producer``: the copy partition's
  first instruction;
- ``first_data`` / ``last_data``: the consumer's first and last wait on a filled stage returning;
- ``stored``: its last output tile handed to TMA; ``end``: that store read out of shared memory.

For each shape and M, on rotating inputs (no call finds its weight in L2), a CUDA graph of the
rotation is replayed and the stamps of its last replay summarised per call (medians over
programs, then over the calls of the rotation): ``launch_gap_us``, this call's first program
start after the previous call's last program end; the phases above relative to ``entry``;
``stream_us``, first to last data (median and slowest program); ``end_spread_us``, last minus
first program end; ``span_us``, first entry to last end. ``ours_us`` and ``probe_us`` are the
shipped kernel and the probe timed in turns (what the stamps cost). The timer ticks in 32 ns
steps, but consecutive readings on the H200 moved in 125-250 ns steps: phases shorter than
that read as 0 or one step.

    python benchmarks/diag_timeline.py --out diag_timeline.json

One-part tiles of 64 rows only (the decode configs); a point whose heuristic config is another
runs 64 x 64 x 256 / 6 and says so in its ``config``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL = os.path.join(ROOT, "ops", "triton_fp8_hopper.py")
SLOTS = 16  # int64 stamps per program
NAMES = {"entry": 0, "init": 1, "issued": 2, "producer": 3, "first_data": 4, "last_data": 5, "stored": 6, "end": 7}


def _stamp(slot: int, indent: int, value: str = "_now()") -> str:
    return " " * indent + f"gl.store(st_ptr + gl.program_id(0) * {SLOTS} + {slot}, {value})\n"


def probe_source(text: str) -> str:
    """The kernel module's source with the stamps in; ``ValueError`` naming any place not found
    exactly once."""
    def put(where: str, old: str, new: str) -> None:
        nonlocal text
        if text.count(old) != 1:
            raise ValueError(f"diag_timeline: {where} found {text.count(old)} times in {KERNEL}, expected once: "
                             "the kernel's text moved; update probe_source")
        text = text.replace(old, new)

    put("the tile-order helper", "@gluon.jit\ndef _tile_offsets(",
        "@gluon.jit\ndef _now():\n"
        '    return gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=gl.int64, is_pure=False,'
        " pack=1)\n\n\n@gluon.jit\ndef _tile_offsets(")
    put("the producer's signature", "def _producer(a_desc,", "def _producer(st_ptr, a_desc,")
    put("the producer's start", "    it = first  # stages filled so far",
        _stamp(NAMES["producer"], 4) + "    it = first  # stages filled so far")
    put("the consumer's signature", "def _consumer(a_smem,", "def _consumer(st_ptr, a_smem,")
    body = ("    zero = gl.zeros([ROWS, BLOCK_N], gl.float32, mma_layout)\n"
            "    num_tiles = gl.cdiv(M, BLOCK_M) * gl.cdiv(N, BLOCK_N)\n    it = 0\n")
    put("the consumer's start", body, body + "    t_last = _now()\n")
    wait = "            mbarrier.wait(ready.index(s), (it // STAGES) & 1)\n            ws = w_smem.index(s)\n"
    put("the consumer's stage wait", wait,
        "            mbarrier.wait(ready.index(s), (it // STAGES) & 1)\n            t_last = _now()\n"
        "            if it == 0:\n" + _stamp(NAMES["first_data"], 16, "t_last") + "            ws = w_smem.index(s)\n")
    end = ("        _store(acc, sa, sb, bias, c_desc, c_smem.index(PART), off_m + PART * ROWS, off_n, HAS_BIAS, C_BOXES)\n"
           "    tma.store_wait(0)\n")
    put("the consumer's end", end, end.replace("    tma.store_wait(0)\n", "")
        + _stamp(NAMES["last_data"], 4, "t_last") + _stamp(NAMES["stored"], 4)
        + "    tma.store_wait(0)\n" + _stamp(NAMES["end"], 4))
    put("the kernel's signature", "C0: gl.constexpr, C1: gl.constexpr):\n",
        "C0: gl.constexpr, C1: gl.constexpr, st_ptr=None):\n" + _stamp(NAMES["entry"], 4)
        + "    gl.static_assert(N_TAIL == 0 and BLOCK_M == 64 and BLOCK_N <= 128, 'probe: one-part 64-row tiles')\n")
    put("the barrier set-up", "        mbarrier.init(empty.index(j), count=BLOCK_M // 64)  # one arrival per consumer\n",
        "        mbarrier.init(empty.index(j), count=BLOCK_M // 64)  # one arrival per consumer\n"
        + _stamp(NAMES["init"], 4))
    put("the early stages", "    else:\n        first = 0\n", "    else:\n        first = 0\n" + _stamp(NAMES["issued"], 4))
    for part in ("_consumer, (a_smem,", "_producer, (a_desc,"):
        if part not in text:
            raise ValueError(f"diag_timeline: no partition {part!r} in {KERNEL}")
        text = text.replace(part, part.replace("(a_", "(st_ptr, a_"))
    put("the launcher", "bias: Optional[torch.Tensor], out: torch.Tensor):\n",
        "bias: Optional[torch.Tensor], out: torch.Tensor, stamps=None):\n")
    put("the launch", "p.M, p.N, p.K, num_warps=4,", "p.M, p.N, p.K, num_warps=4, st_ptr=stamps,")
    return text


def load_probe(folder: str):
    """The probe as a module inside ``hipbmm_inductor.ops`` (its relative imports resolve); Triton
    reads the kernel's source from the file, so it is written to ``folder``."""
    path = os.path.join(folder, "triton_fp8_hopper_timeline.py")
    with open(KERNEL) as f, open(path, "w") as g:
        g.write(probe_source(f.read()))
    name = "hipbmm_inductor.ops._timeline_probe"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _summary(s: torch.Tensor) -> dict:
    """Stamps ``[calls, programs, SLOTS]`` (microseconds) -> per-call phases, medians over calls."""
    rows = []
    for i in range(1, s.shape[0]):
        c, prev = s[i], s[i - 1]
        t0 = c[:, NAMES["entry"]].min()
        since = {k: float((c[:, NAMES[k]] - c[:, NAMES["entry"]]).median())
                 for k in ("init", "issued", "producer", "first_data")}
        stream = c[:, NAMES["last_data"]] - c[:, NAMES["first_data"]]
        end = c[:, NAMES["end"]]
        rows.append({
            "launch_gap_us": float(t0 - prev[:, NAMES["end"]].max()),
            "start_skew_us": float(c[:, NAMES["entry"]].max() - t0),
            **{f"{k}_us": v for k, v in since.items()},
            "stream_us": float(stream.median()), "stream_max_us": float(stream.max()),
            "epilogue_us": float((c[:, NAMES["stored"]] - c[:, NAMES["last_data"]]).median()),
            "store_wait_us": float((end - c[:, NAMES["stored"]]).median()),
            "end_spread_us": float(end.max() - end.min()),
            "span_us": float(end.max() - t0),
        })
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="4096,4096;6144,4096;24576,1536;4096,14336;8192,8192;3584,18944;28672,4096;"
                                       "57344,8192")
    p.add_argument("--m", default="1,16")
    p.add_argument("--note", default="", help="what this run was, kept in the output")
    p.add_argument("--out", default="diag_timeline.json")
    args = p.parse_args()

    from hipbmm_inductor import hardware, timing
    from hipbmm_inductor.bench.gemm import bytes_moved
    from hipbmm_inductor.bench.inputs import make_sets
    from hipbmm_inductor.bench.suites import parse_ints, parse_shapes
    from hipbmm_inductor.ops import triton_configs as C
    from hipbmm_inductor.ops import triton_fp8_hopper as H

    try:
        shapes, ms = parse_shapes(args.shapes), parse_ints(args.m, "--m")
    except ValueError as e:
        p.error(str(e))
    if not torch.cuda.is_available() or torch.version.hip or torch.cuda.get_device_capability() != (9, 0):
        raise SystemExit("diag_timeline: needs an sm_90 GPU")
    dev = torch.device("cuda")
    bw, l2 = timing.copy_bandwidth(dev), timing.cache_bytes(dev)
    points = []
    with tempfile.TemporaryDirectory() as folder:
        probe = load_probe(folder)
        for N, K in shapes:
            for M in ms:
                cfg = C.heuristic_config(M, N, K, False, True)
                if not cfg.get("HOPPER") or H.n_tail(cfg["BLOCK_N"]) or cfg["BLOCK_M"] != 64 or cfg["BLOCK_N"] > 128:
                    cfg = C.make_hopper_config(64, 64, 256, 6)
                sets = make_sets(M, N, K, torch.float8_e4m3fn, False, dev, l2, False)
                sets = sets * 2 if len(sets) == 1 else sets  # a weight past L2: one set, called twice
                n = len(sets)
                prep = probe.prepare(cfg, M, N, K, False, dev)
                stamps = torch.zeros((n, prep.grid[0], SLOTS), dtype=torch.int64, device=dev)
                outs = [torch.empty((M, N), dtype=torch.bfloat16, device=dev) for _ in range(n)]

                def run_probe(i):
                    probe.run_prepared(prep, sets[i].A, sets[i].B, sets[i].scale_a, sets[i].scale_b, None, outs[i],
                                       stamps[i])

                def run_ours(i):
                    H.launch(cfg, sets[i].A, sets[i].B, sets[i].scale_a, sets[i].scale_b, None, torch.bfloat16)

                run_probe(0)
                ref = H.launch(cfg, sets[0].A, sets[0].B, sets[0].scale_a, sets[0].scale_b, None, torch.bfloat16)
                if not torch.equal(outs[0], ref):
                    raise RuntimeError(f"the probe's output differs from the kernel's at {N}x{K}, M={M}")
                ours_us, probe_us = timing.time_graphs([run_ours, run_probe], n, 1.0, 9)
                graph = timing.capture_graph(lambda: [run_probe(i) for i in range(n)], warmup=1)
                for _ in range(5):
                    graph.replay()
                torch.cuda.synchronize()
                row = {"N": N, "K": K, "M": M, "config": cfg, "programs": prep.grid[0],
                       "floor_us": bytes_moved(M, N, K, False) / bw * 1e6, "ours_us": ours_us, "probe_us": probe_us,
                       **_summary(stamps.cpu().double() / 1e3)}
                print({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items() if k != "config"},
                      flush=True)
                points.append(row)
                graph = sets = outs = stamps = None  # free this point's inputs before the next
                # Written after every point: a run cut short by a time limit keeps what it measured.
                with open(args.out, "w") as f:
                    json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                               "triton": __import__("triton").__version__, "sms": hardware.sm_count(dev),
                               "copy_bandwidth_TBps": bw / 1e12, "note": args.note, "points": points}, f, indent=1)


if __name__ == "__main__":
    main()
