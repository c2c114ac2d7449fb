"""Single GEMMs (``python -m hipbmm_inductor bench``): hipb_mm_fp8 against the vendor GEMM, with roofline
floors.

For each weight shape ``(N, K)``, each ``M`` and each bias setting, on fresh random data:

- ``ours``: ``torch.ops.hipbmm.hipb_mm_fp8`` on the prepacked (preshuffled) weight, through the
  whole op (custom op dispatch, validation, tuning lookup, launch) with the chosen backend;
- ``baseline``: ``torch._scaled_mm`` with rowwise scales (bf16 out), i.e. cuBLASLt/CUTLASS on
  NVIDIA, hipBLASLt on ROCm, on the plain weight, in the same accumulation mode as ours:
  ``use_fast_accum=False`` against the Triton backend's default ``promoted`` mode, ``True``
  against ``--accumulation fast`` (``HIPBMM_TRITON_ACCUMULATION``), so like is timed with like;
- ``linear_bf16`` (``--bf16``): ``F.linear`` in bf16, so users see where FP8 pays;
- ``floor``: bytes moved (A, W, scales, bias read once; out written once) over the device copy
  bandwidth measured in the same run; ``compute_floor``: 2MNK over the measured FP8 peak.

Two timings, both medians:

- ``graph`` (default): a CUDA graph that calls the op once per rotating input set, replayed;
  per-call time = replay time / calls. Host overhead is excluded (how vLLM decodes). Input sets
  rotate so that their total exceeds 3x L2: no call finds its weight in cache. Ours and the
  baseline take turns, replay by replay, so both run at the same clocks.
- ``plain``: the same rotation as eager back-to-back launches between two events, so host
  overhead (Python dispatch, validation, tuning lookup, Triton's launcher) shows wherever it
  exceeds the kernel time.

Writes a JSON file (one record per (shape, M, bias), plus device, versions, bandwidth, peak) and
a PNG (TFLOP/s vs M per shape; speedup over the baseline). ``--inductor`` adds Inductor's own
``_scaled_mm`` under ``max-autotune`` for the shapes it names (slow: autotuning per shape).
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import math
import platform
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch

import hipbmm_inductor as hi
from hipbmm_inductor import envs, hardware
from hipbmm_inductor.ops import registry
from hipbmm_inductor.timing import cache_bytes, copy_bandwidth, fp8_peak, time_graph, time_graphs, time_plain

from .inputs import InputSet, make_sets

log = logging.getLogger("hipbmm_inductor")

__all__ = ["Record", "bytes_moved", "run_bench", "format_row", "environment"]


@dataclass
class Record:
    N: int
    K: int
    M: int
    bias: bool
    ours_us: float
    baseline_us: float
    floor_us: float
    compute_floor_us: float
    speedup: float
    floor_fraction: float  # floor_us / ours_us: 1.0 = at the memory roofline
    ours_tflops: float
    baseline_tflops: float
    ours_plain_us: Optional[float] = None
    baseline_plain_us: Optional[float] = None
    linear_bf16_us: Optional[float] = None
    inductor_us: Optional[float] = None
    max_rel_err: Optional[float] = None
    config: Optional[dict] = None
    # The baseline's accumulation when it differs from the run's (cuBLASLt has no fast-accumulation
    # algorithm for some rowwise shapes with bias, e.g. M=1 4096x14336: it then runs promoted).
    baseline_fast_accum: Optional[bool] = None


def bytes_moved(M, N, K, bias: bool) -> int:
    """What one call must move at least: A, W, scales and bias read once, the bf16 output written once."""
    return M * K + N * K + 2 * M * N + 4 * M + 4 * N + (2 * N if bias else 0)


def _inductor_scaled_mm(sets: list[InputSet]):
    """Inductor's own lowering of rowwise ``_scaled_mm`` under max-autotune (no rewrite)."""
    def f(A, Wt, sa, sb, bias):
        return torch._scaled_mm(A, Wt, sa, sb, bias=bias, out_dtype=torch.bfloat16)

    was = hi.is_enabled()
    hi.disable()  # our pass must not rewrite it: this row measures Inductor itself
    try:
        torch._dynamo.reset()
        cf = torch.compile(f, mode="max-autotune-no-cudagraphs", dynamic=False)
        cf(sets[0].A, sets[0].W.t(), sets[0].scale_a, sets[0].scale_b, sets[0].bias)
    finally:
        if was:
            hi.enable()
    return lambda i: cf(sets[i].A, sets[i].W.t(), sets[i].scale_a, sets[i].scale_b, sets[i].bias)


def run_bench(
    shapes: Sequence[tuple[int, int]],
    ms: Sequence[int],
    biases: Sequence[bool] = (False, True),
    backend: str = "triton",
    fp8: torch.dtype = torch.float8_e4m3fn,
    plain: bool = True,
    bf16: bool = True,
    inductor_shapes: Sequence[tuple[int, int, int]] = (),
    device: str = "cuda",
    progress: Callable[[Record], None] = lambda r: None,
) -> dict:
    hi.set_backend(backend)
    dev = torch.device(device)
    be = registry.backend_for(dev)
    # The backend that runs (``auto`` resolves to one), so that the baseline runs in its mode.
    fast = be.name == "triton" and envs.HIPBMM_TRITON_ACCUMULATION == "fast"
    l2 = cache_bytes(dev)  # the last-level cache: MI300's Infinity Cache, not its L2
    bw = copy_bandwidth(dev)
    peak = fp8_peak(dev, fp8)
    log.info("copy bandwidth %.2f TB/s, fp8 peak %.0f TFLOP/s", bw / 1e12, peak / 1e12)
    records = []
    for N, K in shapes:
        for M in ms:
            for bias in biases:
                with_bf16 = bf16 and not bias
                sets = make_sets(M, N, K, fp8, bias, dev, l2, with_bf16)
                n = len(sets)
                ours = lambda i: hi.hipb_mm_fp8(sets[i].A, sets[i].B, sets[i].scale_a, sets[i].scale_b, sets[i].bias)  # noqa: E731
                base_fast = fast

                def base(i):
                    return torch._scaled_mm(
                        sets[i].A, sets[i].W.t(), sets[i].scale_a, sets[i].scale_b,
                        bias=sets[i].bias, out_dtype=torch.bfloat16, use_fast_accum=base_fast,
                    )

                try:
                    r = base(0).float()
                except RuntimeError as e:  # CUBLAS_STATUS_NOT_SUPPORTED for this fast-accum shape
                    if not fast:
                        raise
                    log.warning("baseline: no fast-accumulation algorithm for M=%d N=%d K=%d bias=%s (%s); "
                                "timing the promoted one", M, N, K, bias, str(e)[:120])
                    base_fast = False
                    r = base(0).float()
                # Numerics on the first set (the benchmark must time the right function).
                o = ours(0).float()
                rel = ((o - r).norm() / r.norm()).item()
                # Inductor's own lowering, where asked for, takes its turns with the other two:
                # clocks drift between runs by more than the margins it is compared at.
                ind = _inductor_scaled_mm(sets) if (N, K, M) in set(map(tuple, inductor_shapes)) else None
                ours_us, baseline_us, *inductor_us = time_graphs([ours, base] + ([ind] if ind else []), n)
                floor_us, flops = bytes_moved(M, N, K, bias) / bw * 1e6, 2 * M * N * K
                rec = Record(
                    N=N, K=K, M=M, bias=bias,
                    ours_us=ours_us, baseline_us=baseline_us,
                    floor_us=floor_us, compute_floor_us=flops / peak * 1e6,
                    speedup=baseline_us / ours_us, floor_fraction=floor_us / ours_us,
                    ours_tflops=flops / ours_us / 1e6, baseline_tflops=flops / baseline_us / 1e6,
                    max_rel_err=rel,
                    baseline_fast_accum=None if base_fast == fast else base_fast,
                )
                if plain:
                    rec.ours_plain_us = time_plain(ours, n)
                    rec.baseline_plain_us = time_plain(base, n)
                if with_bf16:
                    rec.linear_bf16_us = time_graph(
                        lambda i: torch.nn.functional.linear(sets[i].A16, sets[i].W16), n
                    )
                if inductor_us:
                    rec.inductor_us = inductor_us[0]
                if be.name == "triton":
                    # What the timed calls launched with: a tuned config where the cache has one.
                    s0 = sets[0]
                    rec.config = dict(be.config_for(s0.A, s0.B, s0.scale_a, s0.scale_b, s0.bias, torch.bfloat16)[0])
                records.append(rec)
                progress(rec)
                sets.clear()  # frees this point's inputs (the timed closures die with the loop)
                torch.cuda.empty_cache()
    speedups = [r.speedup for r in records]
    return {
        **environment(dev),
        "backend": be.name,
        "accumulation": "fast" if fast else "promoted",
        "baseline": f"torch._scaled_mm rowwise, use_fast_accum={fast}",
        "fp8": str(fp8),
        "copy_bandwidth_TBps": bw / 1e12,
        "fp8_peak_TFLOPs": peak / 1e12,
        "timing": "median; 'ours_us'/'baseline_us' from CUDA-graph replays rotating inputs > 3x L2, "
                  "ours and the baseline taking turns; "
                  "'*_plain_us' from eager back-to-back launches (host overhead included)",
        "geomean_speedup": math.exp(sum(map(math.log, speedups)) / len(speedups)) if speedups else None,
        "min_speedup": min(speedups) if speedups else None,
        "records": [asdict(r) for r in records],
    }



def format_row(r: dict | Record) -> str:
    r = asdict(r) if isinstance(r, Record) else r
    plain = ""
    if r.get("ours_plain_us") is not None:
        plain = f" | plain {r['ours_plain_us']:7.1f} / {r['baseline_plain_us']:7.1f}"
    return (
        f"N={r['N']:6d} K={r['K']:6d} M={r['M']:5d} bias={int(r['bias'])} | ours {r['ours_us']:8.1f} us"
        f" | base {r['baseline_us']:8.1f} us | x{r['speedup']:5.2f} | floor {r['floor_us']:7.1f} us"
        f" ({100 * r['floor_fraction']:5.1f}%) | {r['ours_tflops']:6.0f} TF/s{plain}"
        + (" | baseline promoted (no fast-accum algorithm)" if r.get("baseline_fast_accum") is False else "")
    )



def environment(device: torch.device) -> dict:
    """What ran: the device's name and the versions, for every results file."""
    info = {"device": hardware.device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "python": platform.python_version()}
    try:
        info["triton"] = md.version("triton")
    except md.PackageNotFoundError:
        pass
    return info
