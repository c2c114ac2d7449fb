"""Hopper (sm_90) path of the Triton backend, written in Gluon: promoted FP8 GEMM on the
preshuffled weight with no register permute.

What it computes: the same as :mod:`.triton_fp8_gemm` (the op's contract), adding the tensor
cores' partial sums into an fp32 accumulator every 128 products, so its error sits at the bf16
rounding floor like ``torch._scaled_mm(use_fast_accum=False)`` (``benchmarks/results/h200/
diag_promotion.json``: on values that cancel, as close to float64 as cuBLASLt's promoted sums).

Why a second kernel. Two costs keep the portable kernel well behind cuBLASLt above M = 64 with
promotion on (docs/triton.md; ``benchmarks/results/h100/sweep_promoted_portable.json``):

1. The layout. ``W[n, k]`` of a 16-row group lives at ``(k // 16) * 256 + (n % 16) * 16 +
   k % 16`` inside that group's run of ``16 K`` bytes. Read through Triton's generic path, the
   tile must be permuted in registers and written back to shared memory for ``wgmma``. But
   that layout already is ``wgmma``'s *no-swizzle K-major* operand layout: a core matrix is 8
   rows of 16 bytes, contiguous (``n`` at a 16-byte stride). The weight is viewed as ``[K / 16,
   N / 16, 256]``: 256-byte blocks of 16 rows x 16 K, the K block the outermost dimension though
   its stride (256 bytes) is the smaller, the 16-row group inside it at ``16 K`` bytes; TMA takes
   strides in any order. A TMA copy of its ``[BLOCK_K / 16, BLOCK_N / 16,
   256]`` box lands as ``offset = (k // 16) * 16 BLOCK_N + n * 16 + k % 16``: core matrices
   ``n // 8`` at a 128-byte stride, K chunks at ``16 BLOCK_N``. A ``SharedLinearLayout`` that
   says so lets ``wgmma`` read the tile where TMA put it. The same bytes as a 2-D ``[N / 16,
   16 K]`` box, which Triton issues as ``BLOCK_K / 16`` copies of 256 bytes' width, in one copy:
   on the H200 1% faster at decode and 2-4% from M = 256 by geomean, the same outputs
   (``benchmarks/results/h200/ab_w3d_*.json``; on the H100 it was no faster,
   ``h100/diag_w_copies.json``).
2. Promotion. Adding each chain of ``wgmma`` into an fp32 accumulator needs the chain finished
   (a wait) and a pass of adds; in one instruction stream the tensor cores idle meanwhile.
   Here the work is warp-specialised: a producer partition (4 warps on 40 registers, one
   thread of which issues the copies) fills a ``STAGES``-deep ring of TMA copies (``ready`` /
   ``empty`` mbarriers), and each of one or two consumer warpgroups owns 64 rows of the tile.
   A consumer issues 128-product chains into fresh sums (two per stage with ``BLOCK_K`` 256, the
   first added while the second runs), and releases the stage; the two consumers drift out of
   phase, so one's adds overlap the other's tensor-core work.
3. The tile's fixed costs. With a program per tile, every wave of SMs would fill its ring and
   store its output at the same moment, tensor cores idle (a quarter of a 128 x 256 x 4096
   tile's time; ``benchmarks/results/h100/sweep_hopper_wide.json``). So the kernel is
   persistent (one program per SM walks tiles ``pid, pid + grid, ...``; the producer fills the
   ring for the next tile while the consumers finish this one), the scales and bias are loaded
   when a tile starts (they arrive during the main loop), and the output leaves through a
   shared-memory staging tile and a TMA store, which drains while the consumer starts its next
   tile (``benchmarks/results/h100/sweep_hopper_tma.json`` against ``sweep_hopper_wide.json``:
   11-29% faster at M >= 1024; docs/triton.md, "The sm_90 kernel").
4. Decode. A TMA box row past M reads nothing but still costs the copy engine time, so below
   ``BLOCK_M`` A and the output move in 8-row boxes up to M (:func:`a_boxes`); with them this
   kernel is the fastest decode path on sm_90 as well (``benchmarks/results/h100/sweep_hopper_decode.json``). Setting up the
   partitions (register reallocation, the copy warps' first instructions) takes ~0.5 us from the
   kernel's start, so the kernel issues the first tile's first stages before they start, and the
   producer resumes after them: 2.1-3.9% faster at 8192 x 8192 decode on the H200, the same outputs
   (``benchmarks/results/h200/ab_early_decode.json``; phases per program in ``diag_timeline*.json``).

5. Tile widths between the powers of two. A tile of 80, 96 or 160 columns is two parts (64 +
   16, 64 + 32, 128 + 32: :func:`n_tail`), each with its own weight box, accumulator and output
   box, so that a weight's tiles can fill the SMs' last wave (10240 columns at M = 256: 128
   tiles of 128 x 160 on 132 SMs, against 80 of 128 x 256; docs/triton.md, "Two-part tiles").

Limits (checked by the caller, :func:`.triton_fp8_gemm.launch`): sm_90 only (``wgmma`` does not exist elsewhere),
``float8_e4m3fn`` (Hopper's fp8 tensor cores; ``fnuz`` is widened by the portable kernel),
16-byte-aligned A and W, ``K % BLOCK_K == 0``. Rows of A past M and rows of W past N read as
zeros (TMA); the TMA store clips them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.runtime.jit import constexpr_function

from hipbmm_inductor import hardware

from .triton_configs import HOPPER_SMEM_BYTES, TWO_PART_WIDTHS, hopper_smem_bytes

__all__ = ["launch", "prepare", "run_prepared", "Prepared", "ARG_NAMES", "check_config", "n_tail",
           "a_boxes", "c_boxes"]

@constexpr_function
def _w_tile_layout(block_n, block_k):
    """Shared-memory offset -> (n, k) of a ``[block_n, block_k]`` W tile as TMA lands it:
    ``offset = (k // 16) * 16 block_n + n * 16 + k % 16`` (see the module docstring)."""
    bases = [[0, 1 << i] for i in range(4)]
    bases += [[1 << i, 0] for i in range(block_n.bit_length() - 1)]
    bases += [[0, 16 << i] for i in range((block_k // 16).bit_length() - 1)]
    return gl.SharedLinearLayout(offset_bases=bases)


# Gluon is experimental and renames things between releases (Triton 3.6 -> 3.9: tma's
# async_copy_global_to_shared became async_load, shared_memory_descriptor._reinterpret became
# reinterpret). JIT code names functions and methods literally: bind the ones this Triton has.
_tma_load = tma.async_load if hasattr(tma, "async_load") else tma.async_copy_global_to_shared
_tma_store = tma.async_store if hasattr(tma, "async_store") else tma.async_copy_shared_to_global

if hasattr(gl.shared_memory_descriptor, "reinterpret"):

    @gluon.jit
    def _as_w_tile(buf, rows: gl.constexpr, cols: gl.constexpr, layout: gl.constexpr):
        return buf.reinterpret(buf.dtype, [rows, cols], layout).permute((1, 0))

else:

    @gluon.jit
    def _as_w_tile(buf, rows: gl.constexpr, cols: gl.constexpr, layout: gl.constexpr):
        return buf._reinterpret(buf.dtype, [rows, cols], layout).permute((1, 0))


@gluon.jit
def _w_half(buf, j: gl.constexpr, rows: gl.constexpr, half: gl.constexpr, layout: gl.constexpr):
    """Half ``j`` of a stage's K in a weight buffer, as ``wgmma``'s operand: the K blocks are the
    buffer's outermost dimension, so each half is a contiguous ``[rows, half]`` tile in the same
    layout as the whole."""
    return _as_w_tile(buf.slice(j * (half // 16), half // 16, dim=0), rows, half, layout)


@gluon.jit
def _tile_offsets(tile, M, N, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, GROUP_M: gl.constexpr):
    """Grouped order: GROUP_M row blocks sweep N together, so the tiles in flight at once (ids
    ``t .. t + grid``) share W panels and A rows in L2."""
    num_pid_m = gl.cdiv(M, BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_pid_n
    first_m = (tile // group) * GROUP_M
    group_m = gl.minimum(num_pid_m - first_m, GROUP_M)
    off_m = (first_m + ((tile % group) % group_m)) * BLOCK_M
    off_n = ((tile % group) // group_m) * BLOCK_N
    return off_m, off_n


@gluon.jit
def _fill_stage(a_desc, w_desc, w2_desc, a_smem, w_smem, w2_smem, bar, s, i, off_m, off_n,
                BLOCK_N: gl.constexpr, N_TAIL: gl.constexpr, BLOCK_K: gl.constexpr, N_PARTS: gl.constexpr,
                A_BOX: gl.constexpr, A_BOXES: gl.constexpr):
    """Issue the copies of ring slot ``s``: K block ``i`` of the tile at ``(off_m, off_n)``, which
    complete on ``bar``. A goes in A_BOXES boxes of A_BOX rows per 128-byte K chunk: one of BLOCK_M
    rows, or, when M is smaller, boxes of 8 or 16 rows up to M (a_boxes). Tile rows past them are
    never written and feed only output rows that are not stored."""
    nbytes: gl.constexpr = (A_BOX * A_BOXES + BLOCK_N) * BLOCK_K
    A_CHUNKS: gl.constexpr = BLOCK_K // 128
    HEAD: gl.constexpr = BLOCK_N - N_TAIL  # W rows in w_desc's boxes; the last N_TAIL in w2_desc's
    GROUPS: gl.constexpr = HEAD // N_PARTS // 16  # 16-row groups per W box
    mbarrier.expect(bar, nbytes)
    for c in gl.static_range(A_CHUNKS):
        for j in gl.static_range(A_BOXES):
            _tma_load(a_desc, [off_m + j * A_BOX, i * BLOCK_K + c * 128], bar,
                      a_smem.index(s * A_CHUNKS + c).slice(j * A_BOX, A_BOX, dim=0))
    for h in gl.static_range(N_PARTS):
        _tma_load(w_desc, [i * (BLOCK_K // 16), off_n // 16 + h * GROUPS, 0], bar, w_smem.index(s * N_PARTS + h))
    if N_TAIL > 0:
        _tma_load(w2_desc, [i * (BLOCK_K // 16), (off_n + HEAD) // 16, 0], bar, w2_smem.index(s))


@gluon.jit
def _producer(a_desc, w_desc, w2_desc, a_smem, w_smem, w2_smem, ready, empty, M, N, K, first,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, N_TAIL: gl.constexpr, BLOCK_K: gl.constexpr,
              STAGES: gl.constexpr, GROUP_M: gl.constexpr, N_PARTS: gl.constexpr, A_BOX: gl.constexpr,
              A_BOXES: gl.constexpr):
    """Fills the ring, stage after stage, over all of this program's tiles; the kernel issued the
    first tile's first ``first`` stages before the partitions started."""
    num_tiles = gl.cdiv(M, BLOCK_M) * gl.cdiv(N, BLOCK_N)
    it = first  # stages filled so far, over all of this program's tiles: the ring's position
    for tile in range(gl.program_id(0), num_tiles, gl.num_programs(0)):
        off_m, off_n = _tile_offsets(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        # Where this tile's K loop starts, derived from the tile rather than carried from the
        # last one: Triton 3.6 drops a loop-carried `start = 0` from this loop (its TTGIR starts
        # every tile's K loop at `first`; 3.9 keeps it), and a program of several tiles then
        # waits forever for the stages it never issued.
        start = gl.where(tile == gl.program_id(0), first, 0)
        for i in range(start, K // BLOCK_K):
            s = it % STAGES
            # A fresh mbarrier counts its (never completed) phase -1 as done: the first round of
            # the ring passes without waiting.
            mbarrier.wait(empty.index(s), ((it // STAGES) & 1) ^ 1)
            _fill_stage(a_desc, w_desc, w2_desc, a_smem, w_smem, w2_smem, ready.index(s), s, i, off_m, off_n,
                        BLOCK_N, N_TAIL, BLOCK_K, N_PARTS, A_BOX, A_BOXES)
            it += 1


@gluon.jit
def _load_vec(ptr, off, n, SIZE: gl.constexpr):
    """``ptr[off : off + SIZE]`` (zeros past ``n``), in fp32, spread thinly over the warpgroup:
    one or two registers per thread. Issued when a tile starts, it arrives during the main loop
    and costs the epilogue no memory latency."""
    layout: gl.constexpr = gl.BlockedLayout(size_per_thread=[1], threads_per_warp=[32], warps_per_cta=[4],
                                            order=[0])
    offs = off + gl.arange(0, SIZE, layout=layout)
    return gl.load(ptr + offs, mask=offs < n, other=0.0).to(gl.float32)


@gluon.jit
def _a_tile(a_smem, s, k0: gl.constexpr, width: gl.constexpr, PART: gl.constexpr, ROWS: gl.constexpr,
            A_CHUNKS: gl.constexpr):
    """Columns ``k0 .. k0 + width`` of this consumer's rows of stage ``s``'s A tile, which is
    held as one buffer per 128-byte K chunk (the producer's boxes)."""
    buf = a_smem.index(s * A_CHUNKS + k0 // 128).slice(PART * ROWS, ROWS, dim=0)
    if width < 128:
        buf = buf.slice(k0 % 128, width, dim=1)
    return buf


@gluon.jit
def _store(acc, sa, sb, bias, c_desc, c_buf, off_m, off_n, HAS_BIAS: gl.constexpr, C_BOXES: gl.constexpr,
           KEEP: gl.constexpr = 0):
    """The epilogue: scale, add the bias, round, and hand the tile to the copy engine through
    ``c_buf`` (TMA clips rows and columns past the edges). The consumer goes on to its next
    tile while the copy drains; it waits only before reusing ``c_buf``: for all of its stores,
    or, with two staging buffers in turn, all but the ``KEEP`` issued from the other since."""
    layout: gl.constexpr = acc.type.layout
    # The scales and bias, loaded when the tile started, move into the accumulator's layout
    # through shared memory (a few hundred cycles, not a round trip to memory).
    sa = gl.convert_layout(sa, gl.SliceLayout(1, layout))
    sb = gl.convert_layout(sb, gl.SliceLayout(0, layout))
    # Same order as the reference: (acc * scale_a) * scale_b + bias, in fp32, one rounding.
    out = acc * gl.expand_dims(sa, 1) * gl.expand_dims(sb, 0)
    if HAS_BIAS:
        out = out + gl.expand_dims(gl.convert_layout(bias, gl.SliceLayout(0, layout)), 0)
    tma.store_wait(KEEP)
    c_buf.store(out.to(c_desc.dtype))
    fence_async_shared()
    # The rows of A that were loaded, in boxes like A's (the copy engine spends time on box
    # rows past M even though it writes none).
    C_BOX: gl.constexpr = c_desc.block_type.shape[0]
    if C_BOX == 64:
        _tma_store(c_desc, [off_m, off_n], c_buf)
    else:
        for j in gl.static_range(C_BOXES):
            _tma_store(c_desc, [off_m + j * C_BOX, off_n], c_buf.slice(j * C_BOX, C_BOX, dim=0))


@gluon.jit
def _consumer(a_smem, w_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_desc, c_smem, M, N, K,
              PART: gl.constexpr, HAS_BIAS: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
              BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr,
              C_BOXES: gl.constexpr):
    """BLOCK_N <= 128: per stage one 128-product chain (BLOCK_K 128) or two (256), the second
    running while the first is added into the accumulator."""
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, BLOCK_N, 32])
    HALF: gl.constexpr = BLOCK_K // 2
    W_HALF: gl.constexpr = _w_tile_layout(BLOCK_N, HALF)
    W_FULL: gl.constexpr = _w_tile_layout(BLOCK_N, BLOCK_K)
    A_CHUNKS: gl.constexpr = BLOCK_K // 128
    zero = gl.zeros([ROWS, BLOCK_N], gl.float32, mma_layout)
    num_tiles = gl.cdiv(M, BLOCK_M) * gl.cdiv(N, BLOCK_N)
    it = 0
    for tile in range(gl.program_id(0), num_tiles, gl.num_programs(0)):
        off_m, off_n = _tile_offsets(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        sa = _load_vec(sa_ptr, off_m + PART * ROWS, M, ROWS)
        sb = _load_vec(sb_ptr, off_n, N, BLOCK_N)
        bias = _load_vec(bias_ptr, off_n, N, BLOCK_N) if HAS_BIAS else sb
        acc = gl.zeros([ROWS, BLOCK_N], gl.float32, mma_layout)
        for i in range(K // BLOCK_K):
            s = it % STAGES
            mbarrier.wait(ready.index(s), (it // STAGES) & 1)
            ws = w_smem.index(s)
            if BLOCK_K == 128:
                # One 128-product chain: split in two 64-product chains, the sums came out less
                # exact, not more (h200/diag_promotion.json).
                a = _a_tile(a_smem, s, 0, 128, PART, ROWS, A_CHUNKS)
                p = warpgroup_mma(a, _as_w_tile(ws, BLOCK_N, 128, W_FULL), zero, use_acc=False, is_async=True)
                p = warpgroup_mma_wait(num_outstanding=0, deps=(p,))
                mbarrier.arrive(empty.index(s))
                acc = acc + p
            else:
                w0 = _w_half(ws, 0, BLOCK_N, HALF, W_HALF)
                w1 = _w_half(ws, 1, BLOCK_N, HALF, W_HALF)
                a0 = _a_tile(a_smem, s, 0, HALF, PART, ROWS, A_CHUNKS)
                a1 = _a_tile(a_smem, s, HALF, HALF, PART, ROWS, A_CHUNKS)
                p0 = warpgroup_mma(a0, w0, zero, use_acc=False, is_async=True)
                p1 = warpgroup_mma(a1, w1, zero, use_acc=False, is_async=True)
                p0 = warpgroup_mma_wait(num_outstanding=1, deps=(p0,))
                acc = acc + p0  # runs while p1's chain is on the tensor cores
                p1 = warpgroup_mma_wait(num_outstanding=0, deps=(p1,))
                mbarrier.arrive(empty.index(s))  # this consumer is done with the stage
                acc = acc + p1
            it += 1
        # The producer is already filling the ring with the next tile meanwhile.
        _store(acc, sa, sb, bias, c_desc, c_smem.index(PART), off_m + PART * ROWS, off_n, HAS_BIAS, C_BOXES)
    tma.store_wait(0)


@constexpr_function
def _stores_per_part(c_box, c_boxes):
    # TMA stores one part of a consumer's tile issues (one per box; one 64-row box when A's
    # tile is whole): what may stay in flight while the other part's staging tile is rewritten.
    return 1 if c_box == 64 else c_boxes


@gluon.jit
def _consumer_split(a_smem, w_smem, w2_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_desc, c2_desc, c_smem,
                    c2_smem, M, N, K, PART: gl.constexpr, HAS_BIAS: gl.constexpr, ROWS: gl.constexpr,
                    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, N_TAIL: gl.constexpr, BLOCK_K: gl.constexpr,
                    STAGES: gl.constexpr, GROUP_M: gl.constexpr, C_BOXES: gl.constexpr):
    """A tile of ``HEAD + N_TAIL`` columns, two powers of two (say 64 + 32): tile widths between
    the powers of two, so that the tiles of a weight fill the SMs' waves (docs/triton.md). The
    two parts are two accumulators, each fed 128-product chains as in :func:`_consumer`; the
    chains are issued in turn so that one is added while the next runs."""
    HEAD: gl.constexpr = BLOCK_N - N_TAIL
    layout_h: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD, 32])
    layout_t: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, N_TAIL, 32])
    HALF: gl.constexpr = BLOCK_K // 2
    W_HEAD: gl.constexpr = _w_tile_layout(HEAD, HALF)
    W_TAIL: gl.constexpr = _w_tile_layout(N_TAIL, HALF)
    W_HEAD_FULL: gl.constexpr = _w_tile_layout(HEAD, BLOCK_K)
    W_TAIL_FULL: gl.constexpr = _w_tile_layout(N_TAIL, BLOCK_K)
    A_CHUNKS: gl.constexpr = BLOCK_K // 128
    C_BOX: gl.constexpr = c_desc.block_type.shape[0]
    KEEP: gl.constexpr = _stores_per_part(C_BOX, C_BOXES)
    zero_h = gl.zeros([ROWS, HEAD], gl.float32, layout_h)
    zero_t = gl.zeros([ROWS, N_TAIL], gl.float32, layout_t)
    num_tiles = gl.cdiv(M, BLOCK_M) * gl.cdiv(N, BLOCK_N)
    it = 0
    for tile in range(gl.program_id(0), num_tiles, gl.num_programs(0)):
        off_m, off_n = _tile_offsets(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        sa = _load_vec(sa_ptr, off_m + PART * ROWS, M, ROWS)
        sb_h = _load_vec(sb_ptr, off_n, N, HEAD)
        sb_t = _load_vec(sb_ptr, off_n + HEAD, N, N_TAIL)
        bias_h = _load_vec(bias_ptr, off_n, N, HEAD) if HAS_BIAS else sb_h
        bias_t = _load_vec(bias_ptr, off_n + HEAD, N, N_TAIL) if HAS_BIAS else sb_t
        acc_h = gl.zeros([ROWS, HEAD], gl.float32, layout_h)
        acc_t = gl.zeros([ROWS, N_TAIL], gl.float32, layout_t)
        for i in range(K // BLOCK_K):
            s = it % STAGES
            mbarrier.wait(ready.index(s), (it // STAGES) & 1)
            wh, wt = w_smem.index(s), w2_smem.index(s)
            if BLOCK_K == 128:
                # One 128-product chain per part, as in _consumer.
                a = _a_tile(a_smem, s, 0, 128, PART, ROWS, A_CHUNKS)
                ph = warpgroup_mma(a, _as_w_tile(wh, HEAD, 128, W_HEAD_FULL), zero_h, use_acc=False, is_async=True)
                pt = warpgroup_mma(a, _as_w_tile(wt, N_TAIL, 128, W_TAIL_FULL), zero_t, use_acc=False, is_async=True)
                ph = warpgroup_mma_wait(num_outstanding=1, deps=(ph,))
                acc_h = acc_h + ph
                pt = warpgroup_mma_wait(num_outstanding=0, deps=(pt,))
                mbarrier.arrive(empty.index(s))
                acc_t = acc_t + pt
            else:
                h0 = _w_half(wh, 0, HEAD, HALF, W_HEAD)
                h1 = _w_half(wh, 1, HEAD, HALF, W_HEAD)
                t0 = _w_half(wt, 0, N_TAIL, HALF, W_TAIL)
                t1 = _w_half(wt, 1, N_TAIL, HALF, W_TAIL)
                a0 = _a_tile(a_smem, s, 0, HALF, PART, ROWS, A_CHUNKS)
                a1 = _a_tile(a_smem, s, HALF, HALF, PART, ROWS, A_CHUNKS)
                # At most two fresh sums live at once (the register budget of a 128 + 32 tile).
                ph = warpgroup_mma(a0, h0, zero_h, use_acc=False, is_async=True)
                pt = warpgroup_mma(a0, t0, zero_t, use_acc=False, is_async=True)
                ph = warpgroup_mma_wait(num_outstanding=1, deps=(ph,))
                acc_h = acc_h + ph
                ph = warpgroup_mma(a1, h1, zero_h, use_acc=False, is_async=True)
                pt = warpgroup_mma_wait(num_outstanding=1, deps=(pt,))
                acc_t = acc_t + pt
                pt = warpgroup_mma(a1, t1, zero_t, use_acc=False, is_async=True)
                ph = warpgroup_mma_wait(num_outstanding=1, deps=(ph,))
                acc_h = acc_h + ph
                pt = warpgroup_mma_wait(num_outstanding=0, deps=(pt,))
                mbarrier.arrive(empty.index(s))
                acc_t = acc_t + pt
            it += 1
        row = off_m + PART * ROWS
        _store(acc_h, sa, sb_h, bias_h, c_desc, c_smem.index(PART), row, off_n, HAS_BIAS, C_BOXES, KEEP)
        _store(acc_t, sa, sb_t, bias_t, c2_desc, c2_smem.index(PART), row, off_n + HEAD, HAS_BIAS, C_BOXES, KEEP)
    tma.store_wait(0)


@gluon.jit
def _consumer_wide(a_smem, w_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_desc, c_smem, M, N, K,
                   PART: gl.constexpr, HAS_BIAS: gl.constexpr, ROWS: gl.constexpr, BLOCK_M: gl.constexpr,
                   BLOCK_K: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr, C_BOXES: gl.constexpr):
    """BLOCK_N = 256 as two 128-column halves, one chain of BLOCK_K (128) products each per stage:
    a 64 x 256 accumulator plus one fresh 64 x 128 sum fits the register budget (two fresh sums
    would not), and the 128 x 256 tile halves the L2 traffic per FLOP of 128 x 128."""
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, 128, 32])
    gl.static_assert(BLOCK_K == 128, "a 256-wide tile takes BLOCK_K 128 (check_config): one A chunk per stage")
    W_TILE: gl.constexpr = _w_tile_layout(128, BLOCK_K)
    zero = gl.zeros([ROWS, 128], gl.float32, mma_layout)
    num_tiles = gl.cdiv(M, BLOCK_M) * gl.cdiv(N, 256)
    it = 0
    for tile in range(gl.program_id(0), num_tiles, gl.num_programs(0)):
        off_m, off_n = _tile_offsets(tile, M, N, BLOCK_M, 256, GROUP_M)
        sa = _load_vec(sa_ptr, off_m + PART * ROWS, M, ROWS)
        sb0 = _load_vec(sb_ptr, off_n, N, 128)
        sb1 = _load_vec(sb_ptr, off_n + 128, N, 128)
        bias0 = _load_vec(bias_ptr, off_n, N, 128) if HAS_BIAS else sb0
        bias1 = _load_vec(bias_ptr, off_n + 128, N, 128) if HAS_BIAS else sb1
        acc0 = gl.zeros([ROWS, 128], gl.float32, mma_layout)
        acc1 = gl.zeros([ROWS, 128], gl.float32, mma_layout)
        for i in range(K // BLOCK_K):
            s = it % STAGES
            mbarrier.wait(ready.index(s), (it // STAGES) & 1)
            a = _a_tile(a_smem, s, 0, BLOCK_K, PART, ROWS, 1)  # BLOCK_K is 128 here: one chunk
            w0 = _as_w_tile(w_smem.index(2 * s), 128, BLOCK_K, W_TILE)
            w1 = _as_w_tile(w_smem.index(2 * s + 1), 128, BLOCK_K, W_TILE)
            p = warpgroup_mma(a, w0, zero, use_acc=False, is_async=True)
            p = warpgroup_mma_wait(num_outstanding=0, deps=(p,))
            acc0 = acc0 + p
            p = warpgroup_mma(a, w1, zero, use_acc=False, is_async=True)
            p = warpgroup_mma_wait(num_outstanding=0, deps=(p,))
            mbarrier.arrive(empty.index(s))
            acc1 = acc1 + p
            it += 1
        _store(acc0, sa, sb0, bias0, c_desc, c_smem.index(PART), off_m + PART * ROWS, off_n, HAS_BIAS, C_BOXES)
        _store(acc1, sa, sb1, bias1, c_desc, c_smem.index(PART), off_m + PART * ROWS, off_n + 128, HAS_BIAS, C_BOXES)
    tma.store_wait(0)


@gluon.jit
def _fp8_gemm_hopper_kernel(a_desc, w_desc, w2_desc, sa_ptr, sb_ptr, bias_ptr, c_desc, c2_desc, M, N, K,
                            HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                            N_TAIL: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr,
                            A_BOX: gl.constexpr, A_BOXES: gl.constexpr, C0: gl.constexpr, C1: gl.constexpr):
    # Persistent: program p takes tiles p, p + grid, ... (the launcher sizes the grid to the SMs).
    # One program per SM for the whole GEMM means the producer loads the next tile while the
    # consumers finish and store this one; with a program per tile, every wave paid its ring
    # fill and its stores with the tensor cores idle (module docstring, point 3).
    # A tile of BLOCK_N = HEAD + N_TAIL columns (N_TAIL > 0) takes its last N_TAIL weight rows and
    # output columns through w2_desc and c2_desc; otherwise those repeat w_desc and c_desc, unused.
    N_PARTS: gl.constexpr = BLOCK_N // 128 if BLOCK_N > 128 and N_TAIL == 0 else 1  # W boxes per stage
    HEAD: gl.constexpr = BLOCK_N - N_TAIL
    # A: one [BLOCK_M, 128] buffer per 128-byte K chunk (the 128-byte swizzle's width), each
    # filled by its own boxes, so that boxes of fewer rows than BLOCK_M land in place.
    a_smem = gl.allocate_shared_memory(a_desc.dtype, [STAGES * (BLOCK_K // 128), BLOCK_M, 128], a_desc.layout)
    w_smem = gl.allocate_shared_memory(w_desc.dtype, [STAGES * N_PARTS, BLOCK_K // 16, HEAD // N_PARTS // 16, 256],
                                       w_desc.layout)
    # One output staging tile per consumer (64 rows, up to 128 columns) for the TMA store.
    c_smem = gl.allocate_shared_memory(c_desc.dtype, [BLOCK_M // 64, 64, HEAD // N_PARTS], c_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for j in gl.static_range(STAGES):
        mbarrier.init(ready.index(j), count=1)
        mbarrier.init(empty.index(j), count=BLOCK_M // 64)  # one arrival per consumer
    if N_TAIL > 0:
        w2_smem = gl.allocate_shared_memory(w2_desc.dtype, [STAGES, BLOCK_K // 16, N_TAIL // 16, 256], w2_desc.layout)
    else:
        w2_smem = w_smem  # one part: _fill_stage issues no w2 copy
    # The first tile's first stages are issued here, before the partitions start: setting them up
    # (register reallocation, the producer's first instructions) takes ~0.5 us on the H200, during
    # which these copies are already in flight (h200/diag_timeline.json). The grid never exceeds
    # the tiles (prepare), so every program has a first tile. Not for 256-wide tiles (prefill
    # only), where Triton 3.6 then spills.
    if N_PARTS == 1:
        first = gl.minimum(K // BLOCK_K, STAGES)
        off_m0, off_n0 = _tile_offsets(gl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
        for i in range(first):
            _fill_stage(a_desc, w_desc, w2_desc, a_smem, w_smem, w2_smem, ready.index(i), i, i, off_m0, off_n0,
                        BLOCK_N, N_TAIL, BLOCK_K, N_PARTS, A_BOX, A_BOXES)
    else:
        first = 0
    ROWS: gl.constexpr = 64
    # 232 registers per consumer thread (one or two 64-row warpgroups), 40 for the copy warps:
    # within the 64K registers of an SM, and room for the accumulator plus the fresh sums.
    # (Gluon takes the partitions as literal (function, args) pairs, hence five spellings.)
    if N_TAIL > 0:
        c2_smem = gl.allocate_shared_memory(c2_desc.dtype, [BLOCK_M // 64, 64, N_TAIL], c2_desc.layout)
        if BLOCK_M == 128:
            gl.warp_specialize([
                (_consumer_split, (a_smem, w_smem, w2_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_desc, c2_desc,
                                   c_smem, c2_smem, M, N, K, 0, HAS_BIAS, ROWS, BLOCK_M, BLOCK_N, N_TAIL, BLOCK_K,
                                   STAGES, GROUP_M, C0)),
                (_consumer_split, (a_smem, w_smem, w2_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_desc, c2_desc,
                                   c_smem, c2_smem, M, N, K, 1, HAS_BIAS, ROWS, BLOCK_M, BLOCK_N, N_TAIL, BLOCK_K,
                                   STAGES, GROUP_M, C1)),
                (_producer, (a_desc, w_desc, w2_desc, a_smem, w_smem, w2_smem, ready, empty, M, N, K, first,
                             BLOCK_M, BLOCK_N, N_TAIL, BLOCK_K, STAGES, GROUP_M, N_PARTS, A_BOX, A_BOXES)),
            ], [4, 4], [232, 40])
        else:
            gl.warp_specialize([
                (_consumer_split, (a_smem, w_smem, w2_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_desc, c2_desc,
                                   c_smem, c2_smem, M, N, K, 0, HAS_BIAS, ROWS, BLOCK_M, BLOCK_N, N_TAIL, BLOCK_K,
                                   STAGES, GROUP_M, C0)),
                (_producer, (a_desc, w_desc, w2_desc, a_smem, w_smem, w2_smem, ready, empty, M, N, K, first,
                             BLOCK_M, BLOCK_N, N_TAIL, BLOCK_K, STAGES, GROUP_M, N_PARTS, A_BOX, A_BOXES)),
            ], [4], [40])
    elif N_PARTS == 2:
        gl.static_assert(BLOCK_M == 128, "a 256-wide tile needs both consumers (check_config)")
        gl.warp_specialize([
            (_consumer_wide, (a_smem, w_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_desc, c_smem, M, N, K,
                              0, HAS_BIAS, ROWS, BLOCK_M, BLOCK_K, STAGES, GROUP_M, C0)),
            (_consumer_wide, (a_smem, w_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_desc, c_smem, M, N, K,
                              1, HAS_BIAS, ROWS, BLOCK_M, BLOCK_K, STAGES, GROUP_M, C1)),
            (_producer, (a_desc, w_desc, w2_desc, a_smem, w_smem, w2_smem, ready, empty, M, N, K, first,
                         BLOCK_M, BLOCK_N, N_TAIL, BLOCK_K, STAGES, GROUP_M, N_PARTS, A_BOX, A_BOXES)),
        ], [4, 4], [232, 40])
    elif BLOCK_M == 128:
        gl.warp_specialize([
            (_consumer, (a_smem, w_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_desc, c_smem, M, N, K,
                         0, HAS_BIAS, ROWS, BLOCK_M, BLOCK_N, BLOCK_K, STAGES, GROUP_M, C0)),
            (_consumer, (a_smem, w_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_desc, c_smem, M, N, K,
                         1, HAS_BIAS, ROWS, BLOCK_M, BLOCK_N, BLOCK_K, STAGES, GROUP_M, C1)),
            (_producer, (a_desc, w_desc, w2_desc, a_smem, w_smem, w2_smem, ready, empty, M, N, K, first,
                         BLOCK_M, BLOCK_N, N_TAIL, BLOCK_K, STAGES, GROUP_M, N_PARTS, A_BOX, A_BOXES)),
        ], [4, 4], [232, 40])
    else:
        gl.warp_specialize([
            (_consumer, (a_smem, w_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_desc, c_smem, M, N, K,
                         0, HAS_BIAS, ROWS, BLOCK_M, BLOCK_N, BLOCK_K, STAGES, GROUP_M, C0)),
            (_producer, (a_desc, w_desc, w2_desc, a_smem, w_smem, w2_smem, ready, empty, M, N, K, first,
                         BLOCK_M, BLOCK_N, N_TAIL, BLOCK_K, STAGES, GROUP_M, N_PARTS, A_BOX, A_BOXES)),
        ], [4], [40])


# --------------------------------------------------------------------------------------------
# The launcher
# --------------------------------------------------------------------------------------------

_A_LAYOUT = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=8, rank=2)
_W_LAYOUT = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8, rank=3)



def n_tail(block_n: int) -> int:
    """The width of a tile's second part (0: none). A tile of ``BLOCK_N`` columns is one part when
    ``BLOCK_N`` is a power of two, else ``HEAD + N_TAIL``: the largest power of two below it and
    the power of two that remains (48 = 32 + 16, 80 = 64 + 16, 96 = 64 + 32, 160 = 128 + 32; the
    kernel takes those, ``TWO_PART_WIDTHS``). Other widths return -1."""
    if block_n < 16:
        return -1
    if block_n & (block_n - 1) == 0:
        return 0
    tail = block_n - (1 << (block_n.bit_length() - 1))
    return tail if tail & (tail - 1) == 0 and tail >= 16 else -1




def check_config(config: dict, K: int) -> None:
    bm, bn, bk, stages = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"], config["num_stages"]
    # A 256-wide tile needs both consumers: on one (BLOCK_M 64) its two accumulator halves plus
    # the fresh sum leave no registers to spare (Triton 3.9 spills it).
    ok = bm in (64, 128) and ((bn in (32, 64, 128) + TWO_PART_WIDTHS and bk in ((128,) if bn == 160 else (128, 256)))
                              or (bn == 256 and bk == 128 and bm == 128))
    if not ok or K % bk != 0 or not 2 <= stages <= 8 or hopper_smem_bytes(config) > HOPPER_SMEM_BYTES:
        raise ValueError(
            f"hopper config {config}: needs BLOCK_M in (64, 128), BLOCK_N in (32, 64, 128) or one of "
            f"{TWO_PART_WIDTHS} (two parts) with BLOCK_K in (128, 256) (160: 128 only), or BLOCK_N 256 with BLOCK_K 128 and "
            f"BLOCK_M 128, K % BLOCK_K == 0 (K={K}), 2 to 8 stages, and num_stages * (BLOCK_M + BLOCK_N) * "
            f"BLOCK_K + the output staging tiles (BLOCK_M * BLOCK_N * 2 bytes, 128 columns for a 256-wide tile) "
            f"<= {HOPPER_SMEM_BYTES} bytes of shared memory"
        )


@functools.lru_cache(maxsize=None)
def _c_layout(bits: int, cols: int):
    # The output staging tile, swizzled as wide as its rows (at most 128 bytes): conflict-free
    # writes from the accumulator layout.
    return gl.NVMMASharedLayout(swizzle_byte_width=min(128, cols * bits // 8), element_bitwidth=bits, rank=2)


def a_boxes(M: int, block_m: int) -> tuple[int, int]:
    """How A's tile is loaded, per 128-byte K chunk: ``(rows per TMA box, boxes)``.

    One box of ``BLOCK_M`` rows when M fills it; otherwise boxes of 8 rows (16 past 64 rows,
    so that there are at most 8) up to M. A box row past M reads nothing, but the copy engine
    still spends time on it: one 64-row box at M = 1 costs 35-42% more than A padded to 64 rows
    (``benchmarks/results/h100/diag_a_box_before.json``; with these boxes nothing is left to
    gain, ``h100/diag_a_box.json``). Box
    sizes must be powers of two, and 8 rows is the 128-byte swizzle's period, so the boxes land
    at aligned offsets. Below ``BLOCK_M`` this bounds the rows past M at 7 (15 past 64 rows);
    the last row tile of a larger M still loads a whole ``BLOCK_M`` box. Variants per config:
    9 with ``BLOCK_M`` 64, 13 with 128.
    """
    if M >= block_m:
        return block_m, 1
    box = 8 if M <= 64 else 16
    return box, -(-M // box)


def c_boxes(a_box: int, a_n: int) -> tuple[int, int]:
    """Output boxes stored by each of the two 64-row consumers: those of A's boxes that hold its
    rows (none for a consumer whose rows all lie past M). With ``a_box >= 64`` each consumer
    stores its whole 64-row tile in one box instead, and these counts are not used."""
    per = 64 // a_box if a_box < 64 else 1
    return min(a_n, per), max(a_n - per, 0)


# The kernel's arguments in signature order (what a binder-free relaunch passes; checked
# against the compiled kernel by triton_launch.CompiledLaunch.create).
ARG_NAMES = ("a_desc", "w_desc", "w2_desc", "sa_ptr", "sb_ptr", "bias_ptr", "c_desc", "c2_desc", "M", "N", "K",
             "HAS_BIAS", "BLOCK_M", "BLOCK_N", "N_TAIL", "BLOCK_K", "STAGES", "GROUP_M", "A_BOX", "A_BOXES", "C0", "C1")


@dataclass(frozen=True)
class Prepared:
    """Everything a launch of one (config, M, N, K, bias) needs except the tensors' addresses."""

    M: int
    N: int
    K: int
    grid: tuple[int, int, int]
    a_block: tuple[int, int]
    w_block: tuple[int, int, int]
    c_block: tuple[int, int]
    c_layout: object
    constexprs: tuple  # HAS_BIAS .. C1, in ARG_NAMES order
    # A two-part tile's second weight box and output box (n_tail); None: one part.
    w2_block: Optional[tuple[int, int, int]] = None
    c2_block: Optional[tuple[int, int]] = None
    c2_layout: object = None

    def descriptors(self, A: torch.Tensor, B: torch.Tensor, out: torch.Tensor):
        """Host TMA descriptors in the kernel's order: A; the shuffled weight's 16-row groups, in
        the tile's first and second part's boxes; the output, likewise (a one-part tile repeats
        the first: the kernel does not read the second)."""
        M, N, K = self.M, self.N, self.K
        if B.shape != (K, N) or B.stride() != (1, K):
            # The descriptor takes only B's address: a view of another layout would be read wrongly.
            raise ValueError(f"hopper kernel: B must be the [K, N] = [{K}, {N}] prepacked weight with strides "
                             f"(1, {K}), got shape {tuple(B.shape)} and strides {B.stride()}")
        # [K / 16, N / 16, 256]: the 256-byte blocks of 16 rows x 16 K, K block outermost, so that a
        # stage's weight is one TMA message that lands as wgmma reads it (module docstring).
        w_shape, w_strides = [K // 16, N // 16, 256], [256, 16 * K, 1]
        w = TensorDescriptor(B, w_shape, w_strides, list(self.w_block), _W_LAYOUT)
        c = TensorDescriptor(out, [M, N], [N, 1], list(self.c_block), self.c_layout)
        w2, c2 = w, c
        if self.w2_block is not None:
            w2 = TensorDescriptor(B, w_shape, w_strides, list(self.w2_block), _W_LAYOUT)
            c2 = TensorDescriptor(out, [M, N], [N, 1], list(self.c2_block), self.c2_layout)
        return TensorDescriptor(A, [M, K], [K, 1], list(self.a_block), _A_LAYOUT), w, w2, c, c2


def prepare(config: dict, M: int, N: int, K: int, has_bias: bool, device: torch.device,
            programs: Optional[int] = None) -> Prepared:
    """Resolve a launch of ``config`` for one (M, N, K, bias): boxes, grid, constexprs."""
    check_config(config, K)
    if programs is not None and programs < 1:
        raise ValueError(f"programs must be >= 1, got {programs}")
    bm, bn, bk = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
    a_box, a_n = a_boxes(M, bm)
    c0, c1 = c_boxes(a_box, a_n)
    tail = n_tail(bn)
    head = bn - tail
    box_rows = min(head, 128)  # a 256-wide tile is two 128-row boxes (see _consumer_wide)
    c_rows = min(64, a_box)
    tiles = triton.cdiv(M, bm) * triton.cdiv(N, bn)
    return Prepared(
        M=M, N=N, K=K, grid=(min(tiles, programs or hardware.sm_count(device)), 1, 1),
        a_block=(a_box, 128), w_block=(bk // 16, box_rows // 16, 256), c_block=(c_rows, box_rows),
        c_layout=_c_layout(16, box_rows),  # bf16 output
        constexprs=(has_bias, bm, bn, tail, bk, config["num_stages"], config.get("GROUP_M", 8), a_box, a_n, c0, c1),
        w2_block=(bk // 16, tail // 16, 256) if tail else None, c2_block=(c_rows, tail) if tail else None,
        c2_layout=_c_layout(16, tail) if tail else None,
    )


def run_prepared(p: Prepared, A: torch.Tensor, B: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
                 bias: Optional[torch.Tensor], out: torch.Tensor):
    """Launch through Triton (compiling on first use); returns the ``CompiledKernel``."""
    a_desc, w_desc, w2_desc, c_desc, c2_desc = p.descriptors(A, B, out)
    names = ARG_NAMES[11:]
    return _fp8_gemm_hopper_kernel[p.grid](
        a_desc, w_desc, w2_desc, scale_a, scale_b, bias if bias is not None else scale_b, c_desc, c2_desc,
        p.M, p.N, p.K, num_warps=4, **dict(zip(names, p.constexprs)),
    )


def launch(config: dict, A: torch.Tensor, B: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
           bias: Optional[torch.Tensor], out_dtype: torch.dtype, programs: Optional[int] = None) -> torch.Tensor:
    """Run the kernel (sm_90, e4m3fn, 16-byte-aligned A and B); returns a fresh ``[M, N]`` tensor.

    ``programs``: the persistent grid, one program per SM by default (tests set fewer, so that
    small problems run several tiles per program). Host-built TMA descriptors travel by value in
    the kernel parameters, and the output comes from the caching allocator: safe under CUDA-graph
    capture. The Triton backend's launch plans (:mod:`.triton_plan`) call :func:`prepare` once
    per shape instead and relaunch without Triton's binder.
    """
    M, K = A.shape
    N = B.shape[1]
    if out_dtype != torch.bfloat16:
        raise ValueError(f"hopper kernel: out_dtype must be torch.bfloat16, got {out_dtype}")
    p = prepare(config, M, N, K, bias is not None, A.device, programs)
    out = torch.empty((M, N), dtype=out_dtype, device=A.device)
    run_prepared(p, A, B, scale_a, scale_b, bias, out)
    return out
