import triton
from triton.runtime.jit import constexpr_function
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import tma, mbarrier, warpgroup_mma, warpgroup_mma_wait


@constexpr_function
def w_tile_layout(BN, BK):
    bases = [[0, 1 << i] for i in range(4)]
    bases += [[1 << i, 0] for i in range(BN.bit_length() - 1)]
    bases += [[0, 16 << i] for i in range((BK // 16).bit_length() - 1)]
    return gl.SharedLinearLayout(offset_bases=bases)


@gluon.jit
def _kernel(a_desc, w_desc, sa_ptr, sb_ptr, bias_ptr, c_ptr, M, N, K,
            HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
            STAGES: gl.constexpr, GROUP_M: gl.constexpr, OVERLAP: gl.constexpr, SUB: gl.constexpr, num_warps: gl.constexpr):
    pid = gl.program_id(0)
    num_pid_m = gl.cdiv(M, BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_pid_n
    first_m = (pid // group) * GROUP_M
    group_m = gl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % group) % group_m)
    pid_n = (pid % group) // group_m
    off_m = pid_m * BLOCK_M
    off_n = pid_n * BLOCK_N

    a_smem = gl.allocate_shared_memory(a_desc.dtype, [STAGES, BLOCK_M, BLOCK_K], a_desc.layout)
    w_smem = gl.allocate_shared_memory(w_desc.dtype, [STAGES, BLOCK_N // 16, 16 * BLOCK_K], w_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for j in gl.static_range(STAGES):
        mbarrier.init(ready.index(j), count=1)
    nbytes: gl.constexpr = (BLOCK_M + BLOCK_N) * BLOCK_K
    iters = K // BLOCK_K
    for j in gl.static_range(STAGES):
        p = j < iters
        mbarrier.expect(ready.index(j), nbytes, pred=p)
        tma.async_copy_global_to_shared(a_desc, [off_m, j * BLOCK_K], ready.index(j), a_smem.index(j), pred=p)
        tma.async_copy_global_to_shared(w_desc, [off_n // 16, j * BLOCK_K * 16], ready.index(j), w_smem.index(j), pred=p)

    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                         instr_shape=[16, BLOCK_N, 32])
    W_LAYOUT: gl.constexpr = w_tile_layout(BLOCK_N, BLOCK_K)
    acc = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, mma_layout)
    zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, mma_layout)
    if OVERLAP:
        mbarrier.wait(ready.index(0), 0)
        w0 = w_smem.index(0)._reinterpret(w_desc.dtype, [BLOCK_N, BLOCK_K], W_LAYOUT).permute((1, 0))
        prev = warpgroup_mma(a_smem.index(0), w0, zero, use_acc=False, is_async=True)
        for i in range(1, iters):
            s = i % STAGES
            mbarrier.wait(ready.index(s), (i // STAGES) & 1)
            w = w_smem.index(s)._reinterpret(w_desc.dtype, [BLOCK_N, BLOCK_K], W_LAYOUT).permute((1, 0))
            cur = warpgroup_mma(a_smem.index(s), w, zero, use_acc=False, is_async=True)
            done = warpgroup_mma_wait(num_outstanding=1, deps=(prev,))
            acc = acc + done
            # Tile i-1's slot is free: refill it with tile i-1+STAGES.
            nxt = i - 1 + STAGES
            ps = (i - 1) % STAGES
            p = nxt < iters
            mbarrier.expect(ready.index(ps), nbytes, pred=p)
            tma.async_copy_global_to_shared(a_desc, [off_m, nxt * BLOCK_K], ready.index(ps), a_smem.index(ps), pred=p)
            tma.async_copy_global_to_shared(w_desc, [off_n // 16, nxt * BLOCK_K * 16], ready.index(ps), w_smem.index(ps), pred=p)
            prev = cur
        done = warpgroup_mma_wait(num_outstanding=0, deps=(prev,))
        acc = acc + done
    elif SUB == 1:
        for i in range(iters):
            s = i % STAGES
            mbarrier.wait(ready.index(s), (i // STAGES) & 1)
            w = w_smem.index(s)._reinterpret(w_desc.dtype, [BLOCK_N, BLOCK_K], W_LAYOUT).permute((1, 0))
            part = warpgroup_mma(a_smem.index(s), w, zero, use_acc=False, is_async=True)
            part = warpgroup_mma_wait(num_outstanding=0, deps=(part,))
            acc = acc + part
            nxt = i + STAGES
            p = nxt < iters
            mbarrier.expect(ready.index(s), nbytes, pred=p)
            tma.async_copy_global_to_shared(a_desc, [off_m, nxt * BLOCK_K], ready.index(s), a_smem.index(s), pred=p)
            tma.async_copy_global_to_shared(w_desc, [off_n // 16, nxt * BLOCK_K * 16], ready.index(s), w_smem.index(s), pred=p)
    else:
        # Two 128-product chunks per stage, each into its own fresh sum: the second's wgmma runs
        # while the first is added into the fp32 accumulator.
        H: gl.constexpr = BLOCK_K // 2
        W_HALF: gl.constexpr = w_tile_layout(BLOCK_N, H)
        for i in range(iters):
            s = i % STAGES
            mbarrier.wait(ready.index(s), (i // STAGES) & 1)
            ws = w_smem.index(s)
            w0 = ws.slice(0, 16 * H, dim=1)._reinterpret(w_desc.dtype, [BLOCK_N, H], W_HALF).permute((1, 0))
            w1 = ws.slice(16 * H, 16 * H, dim=1)._reinterpret(w_desc.dtype, [BLOCK_N, H], W_HALF).permute((1, 0))
            a = a_smem.index(s)
            p0 = warpgroup_mma(a.slice(0, H, dim=1), w0, zero, use_acc=False, is_async=True)
            p1 = warpgroup_mma(a.slice(H, H, dim=1), w1, zero, use_acc=False, is_async=True)
            p0 = warpgroup_mma_wait(num_outstanding=1, deps=(p0,))
            acc = acc + p0
            p1 = warpgroup_mma_wait(num_outstanding=0, deps=(p1,))
            acc = acc + p1
            nxt = i + STAGES
            p = nxt < iters
            mbarrier.expect(ready.index(s), nbytes, pred=p)
            tma.async_copy_global_to_shared(a_desc, [off_m, nxt * BLOCK_K], ready.index(s), a_smem.index(s), pred=p)
            tma.async_copy_global_to_shared(w_desc, [off_n // 16, nxt * BLOCK_K * 16], ready.index(s), w_smem.index(s), pred=p)
    for j in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(j))

    offs_m = off_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, mma_layout))
    offs_n = off_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, mma_layout))
    mask_m = offs_m < M
    mask_n = offs_n < N
    sa = gl.load(sa_ptr + offs_m, mask=mask_m, other=0.0)
    sb = gl.load(sb_ptr + offs_n, mask=mask_n, other=0.0)
    out = acc * gl.expand_dims(sa, 1) * gl.expand_dims(sb, 0)
    if HAS_BIAS:
        out = out + gl.expand_dims(gl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(gl.float32), 0)
    c_ptrs = c_ptr + gl.expand_dims(offs_m.to(gl.int64), 1) * N + gl.expand_dims(offs_n, 0)
    mask = gl.expand_dims(mask_m, 1) & gl.expand_dims(mask_n, 0)
    gl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=mask)


def launch_gl(A, B, sa, sb, bias, out_dtype, BM=128, BN=128, BK=128, ST=4, OV=0, warps=8, GM=8, SUB=1):
    import torch
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    M, K = A.shape
    N = B.shape[1]
    w = B.t()  # [N, K] shuffled storage, contiguous
    a_desc = TensorDescriptor(A, [M, K], [K, 1], [BM, BK],
                              gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=8, rank=2))
    w2 = w.reshape(N // 16, 16 * K) if w.is_contiguous() else None
    w_desc = TensorDescriptor(w2, [N // 16, 16 * K], [16 * K, 1], [BN // 16, 16 * BK],
                              gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8, rank=2))
    out = torch.empty((M, N), dtype=out_dtype, device=A.device)
    grid = (triton.cdiv(M, BM) * triton.cdiv(N, BN),)
    _kernel[grid](a_desc, w_desc, sa, sb, bias if bias is not None else sb, out, M, N, K,
                  HAS_BIAS=bias is not None, BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, STAGES=ST, GROUP_M=GM,
                  OVERLAP=OV, SUB=SUB, num_warps=warps)
    return out
