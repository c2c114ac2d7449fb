"""Launch configs of the Triton backend's two kernels: the space the online tuner searches and
the heuristic used without tuning.

A config is a flat dict with :data:`CONFIG_KEYS` (JSON in the tuning cache). ``HOPPER: 1`` routes
it to the sm_90 Gluon kernel (:mod:`.triton_fp8_hopper`), which reads ``BLOCK_M``, ``BLOCK_N``,
``BLOCK_K``, ``num_stages`` and ``GROUP_M``; otherwise the portable kernel
(:mod:`.triton_fp8_gemm`) takes all of them. Every rule here was read off a sweep
(``benchmarks/sweep_triton.py``; docs/results.md): the sm_90 kernel's per chip
(:func:`hopper_chip`), from ``benchmarks/results/h100/sweep_*.json`` on the H100 and
``benchmarks/results/h200/sweep_hopper.json`` on the H200; the portable kernel's from the H100's.
"""

from __future__ import annotations

import re

import torch

from hipbmm_inductor import hardware
from hipbmm_inductor.tuning.key import m_bucket as _key_bucket

__all__ = ["CONFIG_KEYS", "HOPPER_SMEM_BYTES", "HOPPER_CHIPS", "TWO_PART_WIDTHS", "config_space", "fits", "heuristic_config", "hopper_chip",
           "hopper_configs", "hopper_smem_bytes", "config_bucket", "make_config", "make_hopper_config"]

CONFIG_KEYS = (
    "BLOCK_M", "BLOCK_N", "BLOCK_K", "SPLIT_K", "GROUP_M", "SWAP_AB", "A_TMA", "HOPPER", "num_warps", "num_stages",
)


# The sm_90 chips the heuristic has rules for. Both are compute capability 9.0 with the same SMs
# and L2; the H200's HBM3e streams ~1.4x the H100's bytes, which moves the best decode and
# M = 256 tiles (benchmarks/results/h200/sweep_hopper.json).
HOPPER_CHIPS = ("h100", "h200")


def hopper_chip(device=None) -> str:
    """Which sm_90 chip's rules :func:`heuristic_config` follows on ``device`` (default: the
    current CUDA device): ``"h200"`` where the device calls itself an H200 (``NVIDIA H200``,
    ``NVIDIA H200 NVL``), else ``"h100"``, the chip every other rule was measured on (an H800,
    H20 or GH200 gets the H100's rules until it has data of its own). No CUDA device: ``"h100"``.
    This is the one place the rules tell the chips apart.

    By name rather than by memory size or clock: torch reports neither the memory's bandwidth
    nor its kind, and the name is what the tuning cache keys on too. One process is assumed to
    see one kind of sm_90 chip: the backend memoises the heuristic without the chip.
    """
    if device is None:
        if not torch.cuda.is_available():
            return "h100"
        device = torch.device("cuda", torch.cuda.current_device())
    return _chip_of(hardware.device_name(device))


def _chip_of(name: str) -> str:
    # "H200" as a word: a GH200 (Grace Hopper) has not been measured and gets the H100's rules.
    return "h200" if re.search(r"\bH200\b", name.upper()) else "h100"


def config_bucket(M: int) -> int:
    """The M bucket a config is chosen for: the tuning key's bucket (:func:`tuning.key.m_bucket`,
    the next power of two), capped at 4096, past which every shape here is compute-bound alike."""
    return min(4096, _key_bucket(int(M)))


def make_config(bm, bn, bk, warps, stages, split_k=1, group_m=8, swap_ab=0, a_tma=0, hopper=0) -> dict:
    return {
        "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": split_k, "GROUP_M": group_m,
        "SWAP_AB": swap_ab, "A_TMA": a_tma, "HOPPER": hopper, "num_warps": warps, "num_stages": stages,
    }


def make_hopper_config(bm, bn, bk, stages) -> dict:
    # The Gluon kernel's shape is fixed by BLOCK_M (one consumer warpgroup per 64 rows, plus a
    # producer) and it always reads A by TMA: num_warps and A_TMA only record that.
    return make_config(bm, bn, bk, 4, stages, a_tma=1, hopper=1)


# The two-part tile widths of the sm_90 kernel (triton_fp8_hopper.n_tail): both parts' chains fit
# the consumer's 232 registers (two fresh sums beside the two accumulators) without spilling, 160
# only with BLOCK_K 128; 192 = 128 + 64 spills (tests/ops/test_triton_hopper.py compiles each).
TWO_PART_WIDTHS = (48, 80, 96, 160)

# Hopper gives a CTA 227 KB of shared memory. The Gluon kernel holds its operand ring, bf16
# output staging tiles for the TMA store (64 rows x BLOCK_N per consumer; a 256-wide tile reuses
# one of 128 columns for its two halves) and ~2 KB of barriers and layout-conversion scratch.
HOPPER_SMEM_BYTES = 225 * 1024


def hopper_smem_bytes(cfg: dict) -> int:
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    return cfg["num_stages"] * (bm + bn) * cfg["BLOCK_K"] + bm * (128 if bn == 256 else bn) * 2


def fits(cfg: dict, N: int, K: int) -> bool:
    # Block shapes must not exceed what the problem offers (wasted work, and BLOCK_K > K would
    # read nothing but masks); shared memory stays under Hopper's 227 KB.
    if K % (cfg["BLOCK_K"] * cfg["SPLIT_K"]) != 0 or cfg["BLOCK_N"] > max(16, N):
        return False
    if cfg.get("HOPPER", 0):
        return hopper_smem_bytes(cfg) <= HOPPER_SMEM_BYTES
    return cfg["num_stages"] * (cfg["BLOCK_M"] + cfg["BLOCK_N"]) * cfg["BLOCK_K"] <= 200 * 1024


def config_space(M: int, N: int, K: int, fast_accum: bool = False, hopper: bool = False,
                 chip: str | None = None) -> list[dict]:
    """Candidate configs for an ``(M, N, K)`` problem (what the online tuner times).

    ``hopper``: the device runs :mod:`.triton_fp8_hopper` (:func:`.triton_fp8_gemm.hopper_path`); its configs
    join the space at every M (only 64-row tiles at M <= 16). Pruned to what won somewhere in the H100 sweeps
    (``benchmarks/results/h100/sweep_*.json``): at most ~135 configs per shape, so an online
    search costs seconds of compiling and timing, not minutes (``tune --max-candidates`` cuts it).
    """
    b = config_bucket(M)
    out = []
    if b <= 64:
        for bm in ([16] if b <= 16 else [16, 64]):
            for bn in (32, 64, 128):
                for bk in (128, 256):
                    for stages in (3, 4):
                        for sk in (1, 2, 4):
                            out.append(make_config(bm, bn, bk, 4, stages, sk))
    else:
        # A through TMA (a_tma=1) won or tied everywhere above M = 64; swapped (C^T = W A^T)
        # tiles only run unpromoted, so only the fast-accumulation space has them. Promoted on
        # sm_90 the Gluon configs below win, but these stay for shapes they cannot take.
        for bm, bn, warps in ((64, 64, 4), (64, 128, 4), (128, 64, 4), (128, 64, 8), (128, 128, 8),
                              (256, 64, 8), (256, 128, 8), (128, 256, 8)):
            for bk in (64, 128, 256):
                for stages in (3, 4):
                    for swap in ((0, 1) if fast_accum else (0,)):
                        out.append(make_config(bm, bn, bk, warps, stages, swap_ab=swap, a_tma=1))
    if hopper:
        # The warp-specialised Gluon kernel beat every portable config here once promoted, and
        # many unpromoted ones at M <= 256 (it promotes regardless: never less exact than asked).
        # At M <= 16 a 128-row tile only doubles the tensor-core work of a weight stream.
        out += [c for c in hopper_configs() if b > 16 or c["BLOCK_M"] == 64]
    out = [c for c in out if fits(c, N, K)]
    # Odd shapes (K % 64 != 0, tiny N) may fit nothing above: the heuristic, shrunk to fit, is
    # always one candidate, so the tuner has a default to keep.
    default = heuristic_config(M, N, K, fast_accum, hopper, chip)
    return out if default in out else out + [default]


def hopper_configs() -> list[dict]:
    """Every config the sm_90 Gluon kernel takes (``triton_fp8_hopper.check_config``), 2 to 4 stages
    (6 for the 64-row tiles at most 64 wide, 8 for the 32-wide ones, which won at some H200 decode
    points: ``benchmarks/results/h200/sweep_hopper.json``), and the two-part tile widths between
    the powers of two (48, 80, 96, 160: ``triton_fp8_hopper.n_tail``), 3 to 6 stages, which let a
    weight's tiles fill the SMs' last wave."""
    pow2 = [make_hopper_config(bm, bn, bk, stages)
            for bm in (64, 128)
            for bn in ((32, 64, 128) if bm == 64 else (64, 128, 256))
            for bk in ((128, 256) if bn <= 128 else (128,))
            # Narrow tiles are for weight streams at decode: deep rings keep their bytes in flight.
            for stages in ((4, 6, 8) if bn == 32 else (3, 4, 6) if bm == 64 and bn == 64 else (2, 3, 4))]
    split = [make_hopper_config(bm, bn, bk, stages)
             for bm in (64, 128)
             for bn in (TWO_PART_WIDTHS if bm == 64 else TWO_PART_WIDTHS[1:])
             for bk in ((128,) if bn == 160 else (128, 256))
             for stages in ((4, 6) if bm == 64 and bn <= 96 else (3, 4))]
    return pow2 + [c for c in split if hopper_smem_bytes(c) <= HOPPER_SMEM_BYTES]


def heuristic_config(M: int, N: int, K: int, fast_accum: bool = False, hopper: bool = False,
                     chip: str | None = None) -> dict:
    """The config used without tuning, per (N, K, M bucket), accumulation mode and device.

    ``chip``: which sm_90 chip's rules pick the Gluon kernel's config (:data:`HOPPER_CHIPS`;
    default :func:`hopper_chip` of the current device). The H200's are :func:`_hopper_h200`; what
    follows is the H100's, which every other chip and the portable kernel use.

    Read off the H100 sweeps (``benchmarks/sweep_triton.py``; results in
    ``benchmarks/results/h100/sweep_*.json``, docs/results.md names each; docs/triton.md):

    - M <= 16, a pure weight stream: what matters is bytes in flight on every SM. On sm_90 the
      Gluon kernel (below), which reads A in 8-row boxes (``triton_fp8_hopper.a_boxes``) and beats
      split-K there: 64 x 32 x 256 with 6 stages up to N = 4096 (narrow tiles so that enough
      programs stream), 64 x 128 x 256 x 3 for 8192 < N <= 16384, else 64 x 64 x 256 x 4
      (``sweep_hopper_decode.json``). Elsewhere: 16-row tiles, BLOCK_K 128, 4 stages; N tile 64
      (128 for N > 8192); split-K until there are ~256 programs (two per SM), since N / BLOCK_N
      alone gives 64 programs at N = 4096.
    - On sm_90 (``hopper``), M > 16: the warp-specialised Gluon kernel, promoting every 128
      products. With fast accumulation too, up to M = 256, and up to M = 1024 for N <= 16384 with
      K <= 8192: there it beats the unpromoted portable kernel (``sweep_fast_interleaved.json``).
      Up to M = 64: 64 x 32 x 256, 6 stages, up to N = 4096 (``sweep_hopper_narrow.json``),
      64 x 64 x 256 x 4 up to N = 8192, 64 x 128 x 256 x 3 beyond (``sweep_m64_interleaved.json``).
      Up to M = 128: 64 x 64 to N = 4096, 64 x 128 to 8192, 128 x 128 to 16384, 128 x 256 x 128
      beyond. Up to M = 256: 128 x 64 to N = 4096, 128 x 128 to 8192, 128 x 256 x 128 (3 stages)
      to 32768, 128 x 128 beyond. Above: 128 x 128 x 256 up to N = 16384, 128 x 256 x 128 beyond;
      where another tile won, it was by at most 5% (``sweep_hopper_tma.json``;
      ``sweep_hopper_large_interleaved.json`` timed in turns).
    - Elsewhere, M <= 64: one 64-row tile (wgmma's minimum) over the whole batch; narrow N tiles
      (32) up to N = 8192, split-K 2 when K >= 2N (e.g. 4096 x 14336); 128-wide N tiles above
      (``sweep_small_m.json``, ``sweep_mid_m.json``).
    - M <= 256, A through TMA. Promoted: 64 x 128 x 256 tiles on 4 warps up to N = 8192,
      128 x 128 x 256 up to 16384, 256 x 128 x 128 beyond. Fast accumulation: swapped tiles
      (C^T = W A^T), 64 x 64 on 4 warps below N = 8192, 128 x 128 up to 16384, 256 x 128 beyond
      (``sweep_promoted_portable.json``, ``sweep_fast_large_m.json``).
    - larger: 256 x 128 x 128 tiles, 8 warps, A through TMA; 3 stages promoted, 4 swapped
      (``sweep_large_m.json``, ``sweep_promoted_portable.json``, ``sweep_fast_large_m.json``).
    """
    b = config_bucket(M)
    wide = N > 8192
    use_hopper = hopper and K % 128 == 0 and N >= 64
    if b <= 16 and not use_hopper:
        bn = 128 if wide else 64
        split_k = 1
        while split_k < 4 and (N // bn) * split_k * 2 <= 256 + (N // bn) // 2:
            split_k *= 2
        return _shrink_to(make_config(16, bn, 128, 4, 4, split_k=split_k), N, K)
    if fast_accum:
        # Unpromoted, the portable swapped tiles win only at M > 1024, and at M = 1024 on deep
        # (K > 8192) or very wide (N > 16384) weights (h100/sweep_fast_interleaved.json).
        use_hopper = use_hopper and (b <= 256 or (b <= 1024 and N <= 16384 and K <= 8192))
    if use_hopper:
        chip = hopper_chip() if chip is None else chip
        if chip not in HOPPER_CHIPS:
            raise ValueError(f"chip must be one of {HOPPER_CHIPS}, got {chip!r}")
        if chip == "h200":
            return _hopper_h200(b, N, K)
        return _hopper_h100(b, N, K)
    if b <= 64:
        if N > 16384:
            cfg = make_config(64, 128, 128, 4, 3)
        elif wide:
            cfg = make_config(64, 128, 256, 4, 4)
        else:
            cfg = make_config(64, 32, 256, 4, 4, split_k=2 if K >= 2 * N else 1)
    elif b <= 256:
        if fast_accum:
            if N > 16384:
                cfg = make_config(256, 128, 128, 8, 4, swap_ab=1, a_tma=1)
            elif N >= 8192:
                cfg = make_config(128, 128, 128, 8, 4, swap_ab=1, a_tma=1)
            else:
                cfg = make_config(64, 64, 128, 4, 4, swap_ab=1, a_tma=1)
        elif N > 16384:
            cfg = make_config(256, 128, 128, 8, 4, a_tma=1)
        elif wide:
            cfg = make_config(128, 128, 256, 8, 3, a_tma=1)
        else:
            cfg = make_config(64, 128, 256, 4, 4, a_tma=1)
    else:
        cfg = make_config(256, 128, 128, 8, 4, swap_ab=1, a_tma=1) if fast_accum else make_config(256, 128, 128, 8, 3, a_tma=1)
    return _shrink_to(cfg, N, K)


def _hopper_h100(b: int, N: int, K: int) -> dict:
    """The sm_90 Gluon kernel's config on the H100 (M bucket ``b``; read off the H100 sweeps
    named in :func:`heuristic_config`'s docstring)."""
    bk = 256 if K % 256 == 0 else 128
    if b <= 16:
        # A pure weight stream: as below, but 64-wide tiles for N > 16384, which stream
        # faster there than 128-wide ones (h100/sweep_hopper_decode.json).
        if N <= 4096:
            cfg = make_hopper_config(64, 32, bk, 6)
        elif 8192 < N <= 16384:
            cfg = make_hopper_config(64, 128, bk, 3)
        else:
            cfg = make_hopper_config(64, 64, bk, 4)
    elif b <= 64:
        if N > 8192:
            cfg = make_hopper_config(64, 128, bk, 3)
        elif N <= 4096:
            # 64 tiles of 64 columns would leave half the SMs idle; 32 columns, 6 deep.
            cfg = make_hopper_config(64, 32, bk, 6)
        else:
            cfg = make_hopper_config(64, 64, bk, 4)
    elif b <= 128:
        if N <= 4096:
            cfg = make_hopper_config(64, 64, bk, 4)
        elif N <= 8192:
            cfg = make_hopper_config(64, 128, bk, 4)
        elif N <= 16384:
            cfg = make_hopper_config(128, 128, bk, 3)
        else:
            cfg = make_hopper_config(128, 256, 128, 3)
    elif b <= 256:
        if N <= 4096:
            cfg = make_hopper_config(128, 64, bk, 4)
        elif N <= 8192 or N > 32768:
            cfg = make_hopper_config(128, 128, bk, 3)
        else:
            cfg = make_hopper_config(128, 256, 128, 3)
    elif N > 16384:
        cfg = make_hopper_config(128, 256, 128, 3)
    else:
        cfg = make_hopper_config(128, 128, bk, 3)
    return cfg


# Both sm_90 parts the rules know have 132 SMs: the persistent grid the tiles are dealt to.
_SMS = 132


def _wave_fill(M: int, N: int, bm: int, bn: int) -> float:
    """How full the last wave of ``bm x bn`` tiles is, averaged over the waves: tiles over
    (waves x SMs). 1.0 when the tiles fill every wave; 0.5 when a last wave of one tile doubles
    the time of a GEMM that is one wave long."""
    tiles = -(-M // bm) * -(-N // bn)
    return tiles / (-(-tiles // _SMS) * _SMS)


def _wider_unless_emptier(M: int, N: int, wide: tuple, narrow: tuple) -> tuple:
    """``wide`` (bm, bn) unless its last waves are emptier than ``narrow``'s: the H200 rule that
    chose between two tile widths at every point of ``h200/sweep_hopper.json`` where one of them
    won. Equal fill keeps the wide tile (fewer tiles, fewer fixed costs, less L2 traffic)."""
    return wide if _wave_fill(M, N, *wide) >= _wave_fill(M, N, *narrow) - 0.01 else narrow


# How fast a full wave of each (BLOCK_M, BLOCK_N) tile of the sm_90 kernel runs on the H200,
# relative to the best tile, per M bucket (up to 128, 256, and 512 and over): fitted to every
# point of benchmarks/results/h200/sweep_split.json (every Gluon config, two-part tiles included,
# at 18 weights of N >= 2048, timed in turns with cuBLASLt) as time = work / (last-wave fill x
# efficiency). With the table so fitted, picking the tile that maximises fill x efficiency landed
# within 0.4% of the fastest tile measured there on average, 3.5% at worst. From M = 512 no 128 x 256 tile: in the sweep it
# was never more than 3% ahead, but it ran x0.90-0.94 of cuBLASLt at 8192 x 28672 and 57344 x
# 8192, M = 1024, in two suite runs (h200/suite_wide1024_run1.json, _run2.json).
_H200_TILE_EFFICIENCY = {
    128: {(128, 256): 1.0, (128, 128): 0.90, (128, 160): 0.78, (128, 96): 0.71, (64, 128): 0.64, (128, 80): 0.63,
          (128, 64): 0.63, (64, 96): 0.54, (64, 160): 0.53, (64, 64): 0.50, (64, 80): 0.49, (64, 48): 0.37,
          (64, 32): 0.34},
    256: {(128, 256): 1.0, (128, 128): 0.88, (128, 160): 0.75, (128, 96): 0.73, (128, 64): 0.68, (64, 128): 0.67,
          (128, 80): 0.66, (64, 96): 0.58, (64, 160): 0.53, (64, 64): 0.52, (64, 80): 0.52, (64, 48): 0.38,
          (64, 32): 0.35},
    1024: {(128, 128): 1.0, (128, 96): 0.84, (128, 160): 0.80, (64, 128): 0.77, (128, 80): 0.76, (128, 64): 0.74,
           (64, 96): 0.65, (64, 64): 0.59, (64, 160): 0.59, (64, 80): 0.58, (64, 48): 0.41, (64, 32): 0.38},
}
# BLOCK_K 128 tiles other than 256-wide ones ran two 64-product chains per stage in that sweep;
# one 128-product chain (the shipped kernel) is faster at most points (median 6%, up to 28%). Re-timed at M = 256 and 512 only
# (h200/sweep_split_bk128.json): there 128 x 160 ran at 0.92 of a full wave of 128 x 128 (x1.12
# of cuBLASLt at 10240 x 8192, M = 512, against x1.02). From M = 1024 it keeps the older figure.
_H200_TILE_EFFICIENCY[512] = {**_H200_TILE_EFFICIENCY[1024], (128, 160): 0.92}

# The ring depth per tile on the H200: in the same sweep, at every M bucket, a deep ring of
# BLOCK_K 256 (the deepest that fits, but 6 rather than 8 stages for 32-wide tiles) was within 1%
# of the best (bk, stages) of its tile on average; 160- and
# 256-wide tiles take BLOCK_K 128 (triton_fp8_hopper.check_config). 64 x 64 tiles from M = 512: 4.
_H200_STAGES = {(64, 32): 6, (64, 48): 6, (64, 64): 6, (64, 80): 4, (64, 96): 4, (64, 128): 4, (64, 160): 4,
                (128, 64): 4, (128, 80): 3, (128, 96): 3, (128, 128): 3, (128, 160): 4, (128, 256): 4}


def _h200_tile(b: int, N: int, K: int, bm: int, bn: int) -> dict:
    bk = 128 if bn in (160, 256) or K % 256 else 256
    return make_hopper_config(bm, bn, bk, 4 if (bm, bn) == (64, 64) and b >= 512 else _H200_STAGES[bm, bn])


def _fastest_tile(b: int, N: int) -> tuple:
    """The tile that maximises last-wave fill x efficiency (:data:`_H200_TILE_EFFICIENCY`) at M
    bucket ``b``; two-part tiles only up to M = 1024, where they were measured."""
    table = _H200_TILE_EFFICIENCY[128 if b <= 128 else 256 if b <= 256 else 512 if b <= 512 else 1024]
    tiles = [t for t in table if t[1] <= N and (b <= 1024 or t[1] & (t[1] - 1) == 0)]
    # max() keeps the first of equal scores: the table's order, most efficient first.
    return max(tiles, key=lambda t: _wave_fill(b, N, *t) * table[t])


def _hopper_h200(b: int, N: int, K: int) -> dict:
    """The sm_90 Gluon kernel's config on the H200 (M bucket ``b``), read off
    ``benchmarks/results/h200/sweep_hopper.json`` (every power-of-two Gluon config, 8 to 40 per
    point, timed in turns with cuBLASLt at 19 weights and M = 1 to 4096) and
    ``benchmarks/results/h200/sweep_split.json`` (the same with the two-part tiles, M = 1 to 1024).

    The H200 streams a weight ~1.4x faster than the H100 with the same 132 SMs and tensor cores,
    so a tile's fixed costs and an idle last wave weigh more: what decides between tile widths is
    mostly how full the last wave of tiles is (:func:`_wave_fill`). At M <= 64, a weight stream:
    64 x 128 tiles for 10240 and 28672 columns but 64 x 64 for 24576, 37888 and 57344 (H100
    rules otherwise), and a two-part tile (64 x 80 or 64 x 96) where its last wave is fuller by
    8 points or more (0.4-3.4% faster at 10240 columns, 2.8-4.6% at 37888; at 28672, 6 points
    fuller, it won at M = 1 and 64 and lost at 16 and 32). From M = 128, the tile with the
    best fill x efficiency (:func:`_fastest_tile`): e.g. 128 x 160 for 10240 columns at M = 256
    (x1.30 of cuBLASLt against x1.00 for 128 x 256, ``sweep_split_bk128.json``), 64 x 80 for 5120
    columns at M = 128 (x1.39 against x1.24-1.27 for the best power-of-two tile,
    ``sweep_split.json``), 128 x 160 for 5120 and 4608 columns at M = 512 (x1.39-1.51 against
    x1.01-1.02 for 128 x 128, ``sweep_split_bk128.json``). Deeper rings pay more
    on the faster memory: 6 stages for 64 x 64 tiles at decode (up to 9% at 5120 x 25600).
    A 128-column weight (a MoE router) is four 32-wide tiles: the portable kernel's split-K,
    32 programs, streams it in 4.5-5.0 us against 6.0-7.5 us for the Gluon kernel at M <= 64.
    """
    bk = 256 if K % 256 == 0 else 128
    if b <= 64:
        if N < 512:
            # BLOCK_K 128: Triton promotes the portable kernel's sums every BLOCK_K products, and
            # 128 is the interval that holds the promoted error bound (docs/triton.md); the
            # sweep's 256-deep twin was at most 4% faster.
            return _shrink_to(make_config(16, 32, 128, 4, 4, split_k=8), N, K)
        if N <= 4096:
            # Fewer than 132 tiles of 64 columns: 32-wide tiles, 6 deep, as on the H100.
            return make_hopper_config(64, 32, bk, 6)
        bm, bn = _wider_unless_emptier(b, N, (64, 128), (64, 64))
        two_part = max((80, 96), key=lambda w: _wave_fill(b, N, 64, w))
        if _wave_fill(b, N, 64, two_part) >= _wave_fill(b, N, 64, bn) + 0.08:
            return make_hopper_config(64, two_part, bk, 4)
        if bn == 128:
            return make_hopper_config(64, 128, bk, 4)
        # 4 stages once A fills the 64-row tile, except over long K loops (K >= 14336); 4 over
        # loops of at most 8 stages (K <= 2048: 24576 x 1536 1-8% faster, h200/sweep_split*.json).
        return make_hopper_config(64, 64, bk, 6 if K > 2048 and (b <= 32 or K >= 14336) else 4)
    if N < 512:
        if b <= 128:
            return make_hopper_config(64, 32, bk, 4)
        return make_hopper_config(64, 32, bk, 6) if b <= 1024 else make_hopper_config(128, 64, bk, 4)
    return _h200_tile(b, N, K, *_fastest_tile(b, N))


def _shrink_to(cfg: dict, N: int, K: int) -> dict:
    """Clamp a config's blocks to small problems (tests, odd shapes) without changing its kind."""
    cfg = dict(cfg)
    while cfg["BLOCK_K"] * cfg["SPLIT_K"] > 32 and K % (cfg["BLOCK_K"] * cfg["SPLIT_K"]) != 0:
        if cfg["SPLIT_K"] > 1:
            cfg["SPLIT_K"] //= 2
        else:
            cfg["BLOCK_K"] //= 2
    while cfg["BLOCK_N"] > 16 and cfg["BLOCK_N"] > N:
        cfg["BLOCK_N"] //= 2
    return cfg
