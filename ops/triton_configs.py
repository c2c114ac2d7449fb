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

__all__ = ["CONFIG_KEYS", "HOPPER_SMEM_BYTES", "HOPPER_CHIPS", "config_space", "fits", "heuristic_config", "hopper_chip",
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


# Hopper gives a CTA 227 KB of shared memory. The Gluon kernel holds its operand ring, one bf16
# output staging tile per consumer (64 x min(BLOCK_N, 128), for the TMA store) and ~2 KB of
# barriers and layout-conversion scratch.
HOPPER_SMEM_BYTES = 225 * 1024


def hopper_smem_bytes(cfg: dict) -> int:
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    return cfg["num_stages"] * (bm + bn) * cfg["BLOCK_K"] + bm * min(bn, 128) * 2


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
    (``benchmarks/results/h100/sweep_*.json``): at most ~130 configs per shape, so an online
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
    points: ``benchmarks/results/h200/sweep_hopper.json``)."""
    return [make_hopper_config(bm, bn, bk, stages)
            for bm in (64, 128)
            for bn in ((32, 64, 128) if bm == 64 else (64, 128, 256))
            for bk in ((128, 256) if bn <= 128 else (128,))
            # Narrow tiles are for weight streams at decode: deep rings keep their bytes in flight.
            for stages in ((4, 6, 8) if bn == 32 else (3, 4, 6) if bm == 64 and bn == 64 else (2, 3, 4))]


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


def _hopper_h200(b: int, N: int, K: int) -> dict:
    """The sm_90 Gluon kernel's config on the H200 (M bucket ``b``), read off
    ``benchmarks/results/h200/sweep_hopper.json`` (every Gluon config, 8 to 40 per point,
    timed in turns with cuBLASLt at 19 weights and M = 1 to 4096).

    The H200 streams a weight ~1.4x faster than the H100 with the same 132 SMs and tensor cores,
    so a tile's fixed costs and an idle last wave weigh more: what decides between two tile
    widths is mostly how full the last wave of tiles is (:func:`_wave_fill`), e.g. at M <= 64
    64 x 128 tiles for 10240 and 28672 columns but 64 x 64 for 24576, 37888 and 57344, and from
    M = 512 128 x 128 tiles for 28672 and 37888 (H100: 128 x 256). Deeper rings pay more on the
    faster memory: 6 stages for 64 x 64 tiles at decode (up to 9% at 5120 x 25600).
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
        if bn == 128:
            return make_hopper_config(64, 128, bk, 4)
        # 4 stages once A fills the 64-row tile, except over long K loops (K >= 14336).
        return make_hopper_config(64, 64, bk, 6 if b <= 32 or K >= 14336 else 4)
    if b <= 128:
        if N < 512:
            return make_hopper_config(64, 32, bk, 4)
        if N <= 4096:
            bm, bn = _wider_unless_emptier(b, N, (64, 64), (64, 32))
            return make_hopper_config(64, bn, bk, 6)
        if N <= 8192:
            return make_hopper_config(64, 128, bk, 4)
        if N <= 16384:
            return make_hopper_config(128, 128, bk, 3)
        if _wave_fill(b, N, 128, 256) >= 0.8:
            return make_hopper_config(128, 256, 128, 3)
        return make_hopper_config(64, 128, bk, 4)
    if b <= 256:
        if N < 512:
            return make_hopper_config(64, 32, bk, 6)
        if N <= 4096:
            bm, bn = _wider_unless_emptier(b, N, (128, 64), (64, 64))
            return make_hopper_config(bm, 64, bk, 4)
        bm, bn = _wider_unless_emptier(b, N, (128, 256), (128, 128))
        return make_hopper_config(128, 256, 128, 4) if bn == 256 else make_hopper_config(128, 128, bk, 3)
    if N < 512:
        return make_hopper_config(64, 32, bk, 6) if b <= 1024 else make_hopper_config(128, 64, bk, 4)
    if _wave_fill(b, N, 128, 128) < 0.6 and -(-b // 128) * -(-N // 128) < 2 * _SMS:
        # A weight no 128-wide tile divides well (N = 2064: 17 column tiles) in one or two waves.
        return make_hopper_config(128, 64, bk, 4)
    # From M = 512 no 128 x 256 tile: 128 x 128 x 256 was within 2% of the best config at every
    # such point of the sweep, and 128 x 256 x 128 (the H100's rule past N = 16384) ran x0.90-0.92
    # of cuBLASLt at 8192 x 28672 and x0.94 at 57344 x 8192, M = 1024, in both suite runs made
    # under an earlier form of this rule that kept it wherever its last wave was as full
    # (h200/suite_wide1024_run1.json, h200/suite_wide1024_run2.json).
    return make_hopper_config(128, 128, bk, 3)


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
