"""Launch configs of the Triton backend's two kernels: the space the online tuner searches and
the heuristic used without tuning.

A config is a flat dict with :data:`CONFIG_KEYS` (JSON in the tuning cache). ``HOPPER: 1`` routes
it to the sm_90 Gluon kernel (:mod:`.triton_fp8_hopper`), which reads ``BLOCK_M``, ``BLOCK_N``,
``BLOCK_K``, ``num_stages`` and ``GROUP_M``; otherwise the portable kernel
(:mod:`.triton_fp8_gemm`) takes all of them. Every rule here was read off an H100 sweep
(``benchmarks/sweep_triton.py``, results in ``benchmarks/results/h100/sweep_*.json``; docs/results.md).
"""

from __future__ import annotations

from hipbmm_inductor.tuning.key import m_bucket as _key_bucket

__all__ = ["CONFIG_KEYS", "HOPPER_SMEM_BYTES", "config_space", "fits", "heuristic_config", "hopper_configs", "hopper_smem_bytes", "config_bucket", "make_config",
           "make_hopper_config"]

CONFIG_KEYS = (
    "BLOCK_M", "BLOCK_N", "BLOCK_K", "SPLIT_K", "GROUP_M", "SWAP_AB", "A_TMA", "HOPPER", "num_warps", "num_stages",
)


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


def config_space(M: int, N: int, K: int, fast_accum: bool = False, hopper: bool = False) -> list[dict]:
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
    default = heuristic_config(M, N, K, fast_accum, hopper)
    return out if default in out else out + [default]


def hopper_configs() -> list[dict]:
    """Every config the sm_90 Gluon kernel takes (``triton_fp8_hopper.check_config``), 2 to 4 stages
    (6 for the 64-row tiles at most 64 wide)."""
    return [make_hopper_config(bm, bn, bk, stages)
            for bm in (64, 128)
            for bn in ((32, 64, 128) if bm == 64 else (64, 128, 256))
            for bk in ((128, 256) if bn <= 128 else (128,))
            # Narrow tiles are for weight streams at decode: deep rings keep their bytes in flight.
            for stages in ((4, 6) if bn == 32 else (3, 4, 6) if bm == 64 and bn == 64 else (2, 3, 4))]


def heuristic_config(M: int, N: int, K: int, fast_accum: bool = False, hopper: bool = False) -> dict:
    """The config used without tuning, per (N, K, M bucket), accumulation mode and device.

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
