import triton
from triton.runtime.jit import constexpr_function
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import tma, mbarrier, warpgroup_mma, warpgroup_mma_wait
from triton.experimental.gluon.language.nvidia.ampere import mbarrier as ambar


@constexpr_function
def w_tile_layout(BN, BK):
    bases = [[0, 1 << i] for i in range(4)]
    bases += [[1 << i, 0] for i in range(BN.bit_length() - 1)]
    bases += [[0, 16 << i] for i in range((BK // 16).bit_length() - 1)]
    return gl.SharedLinearLayout(offset_bases=bases)


@gluon.jit
def _producer(a_desc, w_desc, a_smem, w_smem, ready, empty, K, off_m, off_n,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr):
    nbytes: gl.constexpr = (BLOCK_M + BLOCK_N) * BLOCK_K
    for i in range(K // BLOCK_K):
        s = i % STAGES
        mbarrier.wait(empty.index(s), ((i // STAGES) & 1) ^ 1)
        mbarrier.expect(ready.index(s), nbytes)
        tma.async_copy_global_to_shared(a_desc, [off_m, i * BLOCK_K], ready.index(s), a_smem.index(s))
        tma.async_copy_global_to_shared(w_desc, [off_n // 16, i * BLOCK_K * 16], ready.index(s), w_smem.index(s))


@gluon.jit
def _consumer(a_smem, w_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_ptr, M, N, K, off_m, off_n,
              PART: gl.constexpr, HAS_BIAS: gl.constexpr, SUB_M: gl.constexpr, BLOCK_N: gl.constexpr,
              BLOCK_K: gl.constexpr, STAGES: gl.constexpr):
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, BLOCK_N, 32])
    H: gl.constexpr = BLOCK_K // 2
    W_HALF: gl.constexpr = w_tile_layout(BLOCK_N, H)
    acc = gl.zeros([SUB_M, BLOCK_N], gl.float32, mma_layout)
    zero = gl.zeros([SUB_M, BLOCK_N], gl.float32, mma_layout)
    for i in range(K // BLOCK_K):
        s = i % STAGES
        mbarrier.wait(ready.index(s), (i // STAGES) & 1)
        a = a_smem.index(s).slice(PART * SUB_M, SUB_M, dim=0)
        ws = w_smem.index(s)
        w0 = ws.slice(0, 16 * H, dim=1)._reinterpret(ws.dtype, [BLOCK_N, H], W_HALF).permute((1, 0))
        w1 = ws.slice(16 * H, 16 * H, dim=1)._reinterpret(ws.dtype, [BLOCK_N, H], W_HALF).permute((1, 0))
        p0 = warpgroup_mma(a.slice(0, H, dim=1), w0, zero, use_acc=False, is_async=True)
        p1 = warpgroup_mma(a.slice(H, H, dim=1), w1, zero, use_acc=False, is_async=True)
        p0 = warpgroup_mma_wait(num_outstanding=1, deps=(p0,))
        acc = acc + p0
        p1 = warpgroup_mma_wait(num_outstanding=0, deps=(p1,))
        ambar.arrive(empty.index(s))
        acc = acc + p1
    offs_m = off_m + PART * SUB_M + gl.arange(0, SUB_M, layout=gl.SliceLayout(1, mma_layout))
    offs_n = off_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, mma_layout))
    mask_m = offs_m < M
    mask_n = offs_n < N
    sa = gl.load(sa_ptr + offs_m, mask=mask_m, other=0.0)
    sb = gl.load(sb_ptr + offs_n, mask=mask_n, other=0.0)
    out = acc * gl.expand_dims(sa, 1) * gl.expand_dims(sb, 0)
    if HAS_BIAS:
        out = out + gl.expand_dims(gl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(gl.float32), 0)
    c_ptrs = c_ptr + gl.expand_dims(offs_m.to(gl.int64), 1) * N + gl.expand_dims(offs_n, 0)
    gl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=gl.expand_dims(mask_m, 1) & gl.expand_dims(mask_n, 0))


@gluon.jit
def _ws_kernel(a_desc, w_desc, sa_ptr, sb_ptr, bias_ptr, c_ptr, M, N, K,
               HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
               STAGES: gl.constexpr, GROUP_M: gl.constexpr, CONSUMER_REGS: gl.constexpr):
    pid = gl.program_id(0)
    num_pid_m = gl.cdiv(M, BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_pid_n
    first_m = (pid // group) * GROUP_M
    group_m = gl.minimum(num_pid_m - first_m, GROUP_M)
    off_m = (first_m + ((pid % group) % group_m)) * BLOCK_M
    off_n = ((pid % group) // group_m) * BLOCK_N
    a_smem = gl.allocate_shared_memory(a_desc.dtype, [STAGES, BLOCK_M, BLOCK_K], a_desc.layout)
    w_smem = gl.allocate_shared_memory(w_desc.dtype, [STAGES, BLOCK_N // 16, 16 * BLOCK_K], w_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for j in gl.static_range(STAGES):
        mbarrier.init(ready.index(j), count=1)
        mbarrier.init(empty.index(j), count=BLOCK_M // 64)
    SUB_M: gl.constexpr = 64
    if BLOCK_M == 128:
        gl.warp_specialize([
            (_consumer, (a_smem, w_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_ptr, M, N, K, off_m, off_n,
                         0, HAS_BIAS, SUB_M, BLOCK_N, BLOCK_K, STAGES)),
            (_consumer, (a_smem, w_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_ptr, M, N, K, off_m, off_n,
                         1, HAS_BIAS, SUB_M, BLOCK_N, BLOCK_K, STAGES)),
            (_producer, (a_desc, w_desc, a_smem, w_smem, ready, empty, K, off_m, off_n, BLOCK_M, BLOCK_N, BLOCK_K, STAGES)),
        ], [4, 4], [CONSUMER_REGS, 40])
    else:
        gl.warp_specialize([
            (_consumer, (a_smem, w_smem, ready, empty, sa_ptr, sb_ptr, bias_ptr, c_ptr, M, N, K, off_m, off_n,
                         0, HAS_BIAS, SUB_M, BLOCK_N, BLOCK_K, STAGES)),
            (_producer, (a_desc, w_desc, a_smem, w_smem, ready, empty, K, off_m, off_n, BLOCK_M, BLOCK_N, BLOCK_K, STAGES)),
        ], [4], [40])


def launch_ws(A, B, sa, sb, bias, out_dtype, BM=128, BN=128, BK=256, ST=3, GM=8, REGS=232):
    import torch
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    M, K = A.shape
    N = B.shape[1]
    w2 = B.t().reshape(N // 16, 16 * K)
    a_desc = TensorDescriptor(A, [M, K], [K, 1], [BM, BK],
                              gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=8, rank=2))
    w_desc = TensorDescriptor(w2, [N // 16, 16 * K], [16 * K, 1], [BN // 16, 16 * BK],
                              gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8, rank=2))
    out = torch.empty((M, N), dtype=out_dtype, device=A.device)
    grid = (triton.cdiv(M, BM) * triton.cdiv(N, BN),)
    _ws_kernel[grid](a_desc, w_desc, sa, sb, bias if bias is not None else sb, out, M, N, K,
                     HAS_BIAS=bias is not None, BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, STAGES=ST, GROUP_M=GM,
                     CONSUMER_REGS=REGS, num_warps=4)
    return out
