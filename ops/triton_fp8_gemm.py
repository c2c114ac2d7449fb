"""Triton FP8 GEMM that reads aiter's preshuffled weight layout directly.

What it computes (the op's contract, :mod:`.hipb_mm_fp8`)::

    out[m, n] = cast_bf16( (sum_k A[m, k] * W[n, k]  (fp32)) * scale_a[m] * scale_b[n] + bias[n] )

``A`` is fp8 ``[M, K]`` row-major. ``B`` is the ``[K, N]`` view (strides ``(1, K)``) of ``W``
stored in the (16, 16) shuffled layout: ``W[n, k]`` lives at flat byte offset

    (((n // 16) * (K // 32) + k // 32) * 2 + (k % 32) // 16) * 256 + (n % 16) * 16 + k % 16
  = (n // 16) * 16 K  +  (k // 32) * 512  +  ((k // 16) % 2) * 256  +  (n % 16) * 16  +  k % 16

of ``B.t()``'s storage (docs/contract.md, "The weight layout"). Two facts make this cheap to read in place:

- every 16 consecutive bytes are 16 consecutive ``k`` of one row ``n``: a 16-byte vector load,
  the same width a row-major ``W`` would give;
- for ``k0`` a multiple of 32, ``(k0 // 32) * 512 == 16 * k0``: stepping the K loop by
  ``BLOCK_K`` (a multiple of 32) is one pointer increment of ``16 * BLOCK_K`` bytes.

So for a ``[BLOCK_N, BLOCK_K]`` tile the kernel loads ``BLOCK_N / 16`` contiguous runs of
``16 * BLOCK_K`` bytes (a plain 2-D block: full-width vector loads), restores ``[n, k]`` order in
registers with a reshape/permute, and feeds ``tl.trans(w)`` to ``tl.dot``: K-contiguous, what fp8
``wgmma`` wants for both operands. No unshuffle pass, no copy of the weight.

Accumulation is fp32. On Hopper, fp8 ``wgmma`` keeps its running sum in a reduced-precision
accumulator inside one instruction chain. With ``fast_accum=False`` (``promoted``, the default)
``max_num_imprecise_acc=BLOCK_K`` makes Triton add each ``BLOCK_K`` slice into the fp32
accumulator, as cuBLASLt does without "fast accumulation"; with ``fast_accum=True`` the chain runs
the whole K loop, as vLLM's CUTLASS kernels do (docs/triton.md, "Accumulation", has the measured
errors). ``mma.sync`` (16-row tiles), AMD's MFMA and the interpreter are exact either way.

Two regimes, one kernel, picked by the config:

- small M (decode, M <= 64): the GEMM is a weight stream (N*K bytes vs 2*M*N*K flops).
  ``BLOCK_M`` 16 (64 from M = 17, wgmma's minimum) and ``BLOCK_N`` 32 to 128 give a few hundred
  programs, each streaming a ``BLOCK_N``-row panel of the weight through a software pipeline
  (``num_stages``): a GEMV-like schedule whose only job is to keep enough bytes in flight.
  ``SPLIT_K > 1`` divides K among programs when N alone does not give enough of them; the
  partial sums then meet in an fp32 workspace and a second small kernel reduces them in a fixed
  order and applies the epilogue.
- large M: compute-bound tiles, A through a TMA descriptor on sm_90+ (``A_TMA``), grouped
  program order so that consecutive programs share A rows and W panels in L2; with fast
  accumulation, computed as C^T = W A^T (``SWAP_AB``).

On sm_90, ``HOPPER`` configs route to :mod:`.triton_fp8_hopper` (Gluon: TMA straight into
``wgmma``'s operand layout, warp-specialised promotion), which the heuristic picks above M = 16.
The config space and the heuristic per (N, K, M bucket, mode, device) for both kernels are in
:mod:`.triton_configs`; the launcher takes any config dict from that space, so the online tuner
(:mod:`hipbmm_inductor.tuning`) can time them.

FP8 flavours: where the hardware has fp8 tensor cores for the input's flavour (NVIDIA sm_89+ and
gfx950 for ``float8_e4m3fn``, gfx942 for ``float8_e4m3fnuz``) the kernel feeds fp8 straight to
``tl.dot``. Elsewhere (``e4m3fnuz`` on NVIDIA, or no fp8 units) it loads raw bytes and widens
them to fp16 by bit arithmetic (``UPCAST``): exact, since every e4m3 value is an fp16 value, and
the products and fp32 sums are then the same; it only runs at fp16 tensor-core speed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from hipbmm_inductor import envs, hardware

from .triton_configs import heuristic_config

log = logging.getLogger("hipbmm_inductor")

__all__ = ["launch", "prepare", "run_prepared", "Prepared", "ARG_NAMES", "EPILOGUE_ARG_NAMES", "native_fp8",
           "hopper_path", "hopper_failed", "gluon_validated", "GLUON_VALIDATED"]



# --------------------------------------------------------------------------------------------
# The kernel
# --------------------------------------------------------------------------------------------


@triton.jit
def _fp8_to_fp16_bits(x, FNUZ: tl.constexpr):
    """Exact fp8 (e4m3fn / e4m3fnuz, given as uint8) -> fp16.

    Moving the sign to bit 15 and the 7 exponent+mantissa bits to bits 13..7 gives the fp16 with
    the same exponent field and mantissa; fp16's bias is 15, e4m3fn's 7, e4m3fnuz's 8, so the
    value is off by 2^8 (fn) or 2^7 (fnuz) for normal and subnormal inputs alike. The caller
    folds that power of two into the epilogue; here we only restore the NaN codes.
    """
    x16 = x.to(tl.uint16)
    h = (((x16 & 0x80) << 8) | ((x16 & 0x7F) << 7)).to(tl.float16, bitcast=True)
    if FNUZ:
        nan = x == 0x80  # the only NaN of e4m3fnuz (it has no negative zero)
    else:
        nan = (x & 0x7F) == 0x7F  # e4m3fn's NaN (it has no infinities)
    return tl.where(nan, float("nan"), h)


@triton.jit
def _fp8_gemm_preshuffled_kernel(
    a_ptr,  # fp8 [M, K] row-major (uint8 when UPCAST)
    w_ptr,  # fp8 shuffled [N, K] storage, i.e. B.t() (uint8 when UPCAST)
    sa_ptr,  # fp32 [M] (scale_a, contiguous along M)
    sb_ptr,  # fp32 [N]
    bias_ptr,  # bf16/fp32 [N], or any pointer when HAS_BIAS is False
    c_ptr,  # bf16 [M, N] when SPLIT_K == 1, else fp32 [SPLIT_K, M, N] partial sums
    M,
    N,
    K,
    HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr,
    FNUZ: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    SWAP_AB: tl.constexpr,  # compute C^T = W A^T (see the loop)
    PROMOTE: tl.constexpr,  # add wgmma sums into the fp32 accumulator every BLOCK_K (Accumulation)
    A_TMA: tl.constexpr,  # a_ptr is a host TMA descriptor of A with block [BLOCK_M, BLOCK_K]
):
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped order: GROUP_M row-blocks sweep the N axis together, so a W panel is fetched from
    # HBM once per group and re-read from L2 by the others.
    group = GROUP_M * num_pid_n
    first_m = (pid // group) * GROUP_M
    group_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % group) % group_m)
    pid_n = (pid % group) // group_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Rows past M wrap onto valid ones (likewise W's row groups below): the loads need no
    # masks; the store masks the extra rows and columns out.
    rows_a = offs_m % M

    # The launcher guarantees K % (BLOCK_K * SPLIT_K) == 0 (K % 32 == 0 always allows one), so
    # each of the SPLIT_K programs of a tile takes the same whole number of slices, unmasked.
    iters = K // (BLOCK_K * SPLIT_K)
    k_start = pid_k * iters * BLOCK_K

    if not A_TMA:
        a_ptrs = a_ptr + rows_a.to(tl.int64)[:, None] * K + (k_start + offs_k)[None, :]
    # W: BLOCK_N // 16 row groups; for k in [k0, k0 + BLOCK_K) each group's bytes are ONE
    # contiguous run of 16 * BLOCK_K bytes at (n // 16) * 16 K + 16 k0 (for k0 % 32 == 0,
    # (k0 // 32) * 512 == 16 k0). Load them as a plain 2-D block and restore [n, k] in registers.
    # NOTE: indexing the [BLOCK_N, BLOCK_K] tile straight from the formula measured 1.4x to 1.6x
    # slower on the H100 (docs/triton.md, "How the portable kernel reads the layout").
    # Row groups past N wrap (N % 16 == 0).
    groups = (pid_n * (BLOCK_N // 16) + tl.arange(0, BLOCK_N // 16)) % (N // 16)
    w_ptrs = w_ptr + groups.to(tl.int64)[:, None] * (16 * K) + (16 * k_start + tl.arange(0, 16 * BLOCK_K))[None, :]

    if SWAP_AB:
        acc_t = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for i in range(0, iters):
        if A_TMA:
            # The copy engine fetches A's tile (rows past M read as zeros): no address math
            # in registers, which the 256-row tiles need for the accumulators.
            a = a_ptr.load([pid_m * BLOCK_M, k_start + i * BLOCK_K])
        else:
            a = tl.load(a_ptrs)
        w = tl.load(w_ptrs)
        # [group, k // 16, n % 16, k % 16] -> [group, n % 16, k // 16, k % 16] = [n, k]
        w = tl.reshape(w, (BLOCK_N // 16, BLOCK_K // 16, 16, 16))
        w = tl.reshape(tl.permute(w, (0, 2, 1, 3)), (BLOCK_N, BLOCK_K))
        if UPCAST:
            a = _fp8_to_fp16_bits(a, FNUZ)
            w = _fp8_to_fp16_bits(w, FNUZ)
        if SWAP_AB:
            # C^T = W A^T: the register-permuted W tile becomes wgmma's A operand, which stays
            # in registers instead of going back through shared memory (docs/triton.md, "The
            # portable kernel: two regimes").
            # Triton does not promote this form (max_num_imprecise_acc is ignored with a register
            # operand, and a written-out `acc += dot(..)` is folded back into one chain), so the
            # launcher uses it only with fast accumulation.
            acc_t = tl.dot(w, tl.trans(a), acc_t)
        elif PROMOTE and not UPCAST:
            acc = tl.dot(a, tl.trans(w), acc, max_num_imprecise_acc=BLOCK_K)
        else:
            acc = tl.dot(a, tl.trans(w), acc)
        if not A_TMA:
            a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K * 16

    if SWAP_AB:
        acc = tl.trans(acc_t)
    if UPCAST:
        # Undo the two 2^bias-difference factors of _fp8_to_fp16_bits (exact: a power of two).
        acc = acc * (65536.0 if not FNUZ else 16384.0)

    mask_m = offs_m < M
    mask_n = offs_n < N
    mask = mask_m[:, None] & mask_n[None, :]
    if SPLIT_K == 1:
        sa = tl.load(sa_ptr + offs_m, mask=mask_m, other=0.0)
        sb = tl.load(sb_ptr + offs_n, mask=mask_n, other=0.0)
        # Same order as the reference: (acc * scale_a) * scale_b + bias, in fp32, one rounding.
        out = acc * sa[:, None] * sb[None, :]
        if HAS_BIAS:
            out += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
        tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=mask)
    else:
        c_ptrs = c_ptr + (pid_k * M + offs_m).to(tl.int64)[:, None] * N + offs_n[None, :]
        tl.store(c_ptrs, acc, mask=mask)


@triton.jit
def _split_k_epilogue_kernel(
    p_ptr,  # fp32 [SPLIT_K, M, N]
    sa_ptr,
    sb_ptr,
    bias_ptr,
    c_ptr,  # bf16 [M, N]
    M,
    N,
    HAS_BIAS: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Sum the SPLIT_K partial tiles in a fixed order (deterministic, unlike atomics), then the
    same epilogue as the main kernel."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mn = M * N
    mask = offs < mn
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(p_ptr + s * mn + offs, mask=mask, other=0.0)
    m = offs // N
    n = offs % N
    out = acc * tl.load(sa_ptr + m, mask=mask, other=0.0) * tl.load(sb_ptr + n, mask=mask, other=0.0)
    if HAS_BIAS:
        out += tl.load(bias_ptr + n, mask=mask, other=0.0).to(tl.float32)
    tl.store(c_ptr + offs, out.to(c_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------
# The launcher
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def native_fp8(device_type: str, arch: str, dtype: torch.dtype) -> bool:
    """Whether ``tl.dot`` takes ``dtype`` natively on this arch (else the UPCAST path runs).

    ``arch`` is ``"sm_<major><minor>"`` on NVIDIA, the gfx name on ROCm, ``"interpreter"`` under
    ``TRITON_INTERPRET=1``.
    """
    if arch == "interpreter":
        # The interpreter computes dots in numpy after converting with torch: both flavours work.
        return True
    # The GPUs with fp8 matrix cores (sm_89+, gfx94x, gfx95x) take their own flavour only.
    if device_type == "cuda" and arch.startswith("sm_"):
        return int(arch[3:]) >= 89 and dtype == hardware.fp8_for_arch(arch)
    if arch.startswith(("gfx94", "gfx95")):
        return dtype == hardware.fp8_for_arch(arch)
    return False


# NOTE: cached with TRITON_INTERPRET read once: Triton itself fixes interpretation when a kernel
# is decorated (at this module's import), so a later change of the variable changes nothing.
@functools.lru_cache(maxsize=64)
def _arch_for(device: torch.device) -> str:
    """The ``arch`` that :func:`native_fp8` takes for ``device``."""
    if envs.TRITON_INTERPRET:
        return "interpreter"
    return hardware.arch(device) or device.type


@functools.lru_cache(maxsize=64)
def _has_tma(device: torch.device) -> bool:
    """The bulk tensor copy engine: NVIDIA sm_90+ (not the interpreter, not ROCm)."""
    arch = _arch_for(device)
    return arch.startswith("sm_") and int(arch[3:]) >= 90


@functools.lru_cache(maxsize=64)
def hopper_path(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the Gluon kernel of :mod:`.triton_fp8_hopper` (``HOPPER`` configs) can run here:
    sm_90 (``wgmma``), ``float8_e4m3fn``, and a Triton with Gluon's warp specialisation."""
    if device.type != "cuda" or dtype != torch.float8_e4m3fn or _arch_for(device) != "sm_90":
        return False
    if _device_index(device) in _hopper_failed:
        return False
    if not gluon_validated(triton.__version__):
        log.info("hipbmm_inductor: the sm_90 Gluon kernel is validated on Triton %s only (this is %s); "
                 "using the portable kernel", "/".join(GLUON_VALIDATED), triton.__version__)
        return False
    try:
        # Imported here, as the check itself: an older Triton without Gluon fails this import.
        from . import triton_fp8_hopper  # noqa: F401
    except ImportError:  # an older Triton without triton.experimental.gluon
        return False
    return True


# Triton versions on which the sm_90 Gluon kernel ran the GPU tests (tests/ops, H100). Gluon is
# experimental: an API change fails loudly (and falls back), but a changed layout convention
# could compute wrong numbers, so a new version is enabled only after its GPU run.
# Triton 3.9 compiles the kernel (the CPU test checks it) but has not run it on a GPU.
GLUON_VALIDATED = ("3.6",)


def gluon_validated(version: str) -> bool:
    return any(version == v or version.startswith(v + ".") for v in GLUON_VALIDATED)


def _hopper_supports(A: torch.Tensor, B: torch.Tensor) -> bool:
    # TMA addresses 16-byte-aligned bases only.
    return A.data_ptr() % 16 == 0 and B.data_ptr() % 16 == 0


# Devices where the Gluon kernel failed to compile or launch once: Gluon is experimental, and an
# API change in a newer Triton must cost speed, not the backend (logged once per device).
_hopper_failed: set = set()


def _device_index(device: torch.device) -> int:
    # "cuda" and "cuda:0" name the same GPU when 0 is current.
    return device.index if device.index is not None else torch.cuda.current_device()


# The two kernels' arguments in signature order (for binder-free relaunches; checked against the
# compiled kernels by triton_launch.CompiledLaunch.create).
ARG_NAMES = ("a_ptr", "w_ptr", "sa_ptr", "sb_ptr", "bias_ptr", "c_ptr", "M", "N", "K", "HAS_BIAS", "UPCAST", "FNUZ",
             "BLOCK_M", "BLOCK_N", "BLOCK_K", "SPLIT_K", "GROUP_M", "SWAP_AB", "PROMOTE", "A_TMA")
EPILOGUE_ARG_NAMES = ("p_ptr", "sa_ptr", "sb_ptr", "bias_ptr", "c_ptr", "M", "N", "HAS_BIAS", "SPLIT_K", "BLOCK")
_EPILOGUE_BLOCK = 1024


@dataclass(frozen=True)
class Prepared:
    """Everything a launch of the portable kernel for one (config, M, N, K, bias, mode) needs except
    the tensors' addresses. ``a_tma`` launches need A 16-byte aligned (the caller checks)."""

    M: int
    N: int
    K: int
    grid: tuple[int, int, int]
    split_k: int
    upcast: bool
    a_tma: bool
    a_block: tuple[int, int]
    constexprs: tuple  # HAS_BIAS .. A_TMA, in ARG_NAMES order
    num_warps: int
    num_stages: int
    epilogue_grid: tuple[int, int, int]


def prepare(config: dict, M: int, N: int, K: int, dtype: torch.dtype, has_bias: bool, device: torch.device,
            fast_accum: bool = False) -> Prepared:
    """Resolve a launch of a portable (non-``HOPPER``) ``config``; raises ``ValueError`` for a
    config the kernel cannot run."""
    BM, BN, BK, SK = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"], config.get("SPLIT_K", 1)
    if K % (BK * SK) != 0 or BK % 32 != 0 or BN % 16 != 0:
        raise ValueError(
            f"triton config {config}: needs BLOCK_K % 32 == 0, BLOCK_N % 16 == 0 and "
            f"K % (BLOCK_K * SPLIT_K) == 0 (K={K})"
        )
    upcast = not native_fp8(device.type, _arch_for(device), dtype)
    fnuz = dtype == torch.float8_e4m3fnuz
    swap = bool(config.get("SWAP_AB", 0)) and fast_accum
    a_tma = bool(config.get("A_TMA", 0)) and _has_tma(device)
    return Prepared(
        M=M, N=N, K=K, grid=(triton.cdiv(M, BM) * triton.cdiv(N, BN), SK, 1), split_k=SK, upcast=upcast,
        a_tma=a_tma, a_block=(BM, BK),
        constexprs=(has_bias, upcast, fnuz, BM, BN, BK, SK, config.get("GROUP_M", 8), swap, not fast_accum, a_tma),
        num_warps=config["num_warps"], num_stages=config["num_stages"],
        epilogue_grid=(triton.cdiv(M * N, _EPILOGUE_BLOCK), 1, 1),
    )


def a_descriptor(p: Prepared, A: torch.Tensor):
    """The host TMA descriptor of A for ``a_tma`` launches (A must be 16-byte aligned)."""
    return TensorDescriptor(A, [p.M, p.K], [p.K, 1], list(p.a_block))


def run_prepared(p: Prepared, A: torch.Tensor, B: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
                 bias: Optional[torch.Tensor], out: torch.Tensor, workspace: Optional[torch.Tensor] = None):
    """Launch through Triton (compiling on first use); returns the ``CompiledKernel`` of the main
    kernel and of the split-K epilogue (``None`` without split-K). ``workspace``: the fp32
    ``[SPLIT_K, M, N]`` partial sums when ``split_k > 1``."""
    w = B.t()  # the shuffled [N, K] storage, contiguous
    if p.upcast:
        # The kernel decodes the bytes itself; Triton has no fp8e4b8 type on NVIDIA.
        A, w = A.view(torch.uint8), w.view(torch.uint8)
    # A host-built descriptor travels by value in the kernel's parameters: nothing to allocate
    # or free, so graph capture and replay are unaffected.
    a_arg = a_descriptor(p, A) if p.a_tma else A
    target = out if p.split_k == 1 else workspace
    bias_arg = bias if bias is not None else scale_b
    names = ARG_NAMES[9:]
    main = _fp8_gemm_preshuffled_kernel[p.grid](
        a_arg, w, scale_a, scale_b, bias_arg, target, p.M, p.N, p.K,
        num_warps=p.num_warps, num_stages=p.num_stages, **dict(zip(names, p.constexprs)),
    )
    epilogue = None
    if p.split_k > 1:
        epilogue = _split_k_epilogue_kernel[p.epilogue_grid](
            target, scale_a, scale_b, bias_arg, out, p.M, p.N,
            HAS_BIAS=bias is not None, SPLIT_K=p.split_k, BLOCK=_EPILOGUE_BLOCK, num_warps=4,
        )
    return main, epilogue


def launch(
    config: dict,
    A: torch.Tensor,
    B: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    bias: Optional[torch.Tensor],
    out_dtype: torch.dtype,
    fast_accum: bool = False,
) -> torch.Tensor:
    """Run the kernel with ``config`` on validated inputs; returns a fresh ``[M, N]`` tensor.

    ``fast_accum`` drops the fp32 promotion of Hopper's wgmma sums (see "Accumulation" above);
    it is what lets ``SWAP_AB`` configs run swapped. Allocates only through the caching
    allocator and never synchronises, so it is safe under CUDA-graph capture. This is the
    launch through Triton's binder that tuning and tests use; the backend's per-shape launch
    plans (:mod:`.triton_plan`) resolve the same steps once and relaunch without it.
    """
    M, K = A.shape
    N = B.shape[1]
    if config.get("HOPPER", 0):
        sm90 = A.device.type == "cuda" and _arch_for(A.device) == "sm_90"
        if not sm90 or A.dtype != torch.float8_e4m3fn:
            where = _arch_for(A.device) if A.device.type == "cuda" else A.device.type
            raise ValueError(
                f"triton config {config}: HOPPER configs need an sm_90 GPU and float8_e4m3fn inputs "
                f"(got {where}, {A.dtype})"
            )
        if hopper_path(A.device, A.dtype) and _hopper_supports(A, B):
            from . import triton_fp8_hopper as hopper  # imports Gluon, which hopper_path() found importable

            try:
                return hopper.launch(config, A, B, scale_a, scale_b, bias, out_dtype)
            except (ValueError, torch.OutOfMemoryError):
                raise  # a bad config, or no memory: the caller's problem, not Gluon's
            except Exception as e:  # noqa: BLE001 - compile errors, API drift: see _hopper_failed
                hopper_failed(A.device, e)
        # The Gluon kernel is not usable here (an unvalidated Triton, a failure above, a view TMA
        # cannot address, e.g. a tuned config cached elsewhere): the portable kernel, promoted too.
        config = heuristic_config(M, N, K, fast_accum)
    p = prepare(config, M, N, K, A.dtype, bias is not None, A.device, fast_accum)
    if p.a_tma and A.data_ptr() % 16 != 0:
        p = dataclasses.replace(p, a_tma=False, constexprs=p.constexprs[:-1] + (False,))
    out = torch.empty((M, N), dtype=out_dtype, device=A.device)
    workspace = None if p.split_k == 1 else torch.empty((p.split_k, M, N), dtype=torch.float32, device=A.device)
    run_prepared(p, A, B, scale_a, scale_b, bias, out, workspace)
    return out


def hopper_failed(device: torch.device, e: BaseException) -> None:
    """Record that the Gluon kernel failed on ``device``: the portable kernel serves it from now on."""
    _hopper_failed.add(_device_index(device))
    hopper_path.cache_clear()
    log.warning("hipbmm_inductor: the sm_90 Gluon kernel failed on %s (%s: %s); using the "
                "portable Triton kernel from now on", device, type(e).__name__, str(e)[:300])
