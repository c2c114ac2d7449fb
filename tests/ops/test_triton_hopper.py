"""The Triton backend's sm_90 kernel (:mod:`hipbmm_inductor.ops.triton_fp8_hopper`, Gluon).

CPU (CI): which Tritons may run it, that it refuses other devices, that it compiles for sm_90
with the Triton CI installs (wgmma, TMA loads and stores, the register split, no spills), and
how A is cut into TMA boxes below BLOCK_M. GPU (marker ``gpu``, sm_90 only): ragged shapes,
M below BLOCK_M, several tiles per persistent program, bad ``programs``, and the fallback to the
portable kernel. Tolerances: :func:`inputs.assert_close_to_truth` (one bf16 ulp plus the fp32
accumulation bound, and the tensor cores' 2^-14 within a promotion interval).
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.support.gpu_wait import finished_or_fail
from tests.support.inputs import assert_close_to_truth, make_case

triton = pytest.importorskip("triton")
T = pytest.importorskip("hipbmm_inductor.ops.triton_fp8_gemm")
from hipbmm_inductor.ops import triton_configs as C  # noqa: E402

try:  # Gluon (triton.experimental.gluon): the sm_90 kernel's language; older Tritons lack it.
    from hipbmm_inductor.ops import triton_fp8_hopper as H
except ImportError:
    H = None
needs_gluon = pytest.mark.skipif(H is None, reason="this Triton has no triton.experimental.gluon")
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/ROCm GPU")


def test_gluon_kernel_only_on_validated_tritons():
    assert T.gluon_validated("3.6.0") and T.gluon_validated("3.6")
    assert not T.gluon_validated("3.60.0") and not T.gluon_validated("3.9.0") and not T.gluon_validated("3.5.1")


def test_hopper_config_refused_off_sm90():
    c = make_case(20, 64, 256, bias_dtype=None)
    with pytest.raises(ValueError, match="HOPPER configs need an sm_90 GPU and float8_e4m3fn"):
        T.launch(C.make_hopper_config(64, 64, 128, 2), *c.args)
    assert not T.hopper_path(torch.device("cpu"), torch.float8_e4m3fn)


@needs_gluon
@pytest.mark.parametrize("bm,bn,bk,stages,m", [(128, 128, 256, 3, 128), (64, 64, 256, 4, 64), (128, 64, 128, 4, 128),
                                               (128, 256, 128, 4, 128), (64, 128, 256, 3, 64), (64, 32, 256, 6, 64),
                                               # M below BLOCK_M: 8-row boxes up to M
                                               (64, 32, 256, 6, 1), (64, 128, 256, 3, 20), (128, 256, 128, 4, 72),
                                               (128, 128, 256, 3, 40),
                                               # two-part tiles (n_tail), the widest being 128 + 32
                                               (128, 160, 128, 4, 256), (64, 160, 128, 4, 16), (128, 80, 256, 3, 200), (64, 96, 256, 4, 64),
                                               (64, 80, 256, 6, 1), (64, 48, 256, 6, 16), (128, 96, 128, 4, 128)]
                         # every two-part config the tuner may time, on whole tiles, and every
                         # (BLOCK_M, width, BLOCK_K) check_config admits, at its deepest ring that fits
                         + [(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], c["num_stages"], c["BLOCK_M"])
                            for c in C.hopper_configs() if c["BLOCK_N"] & (c["BLOCK_N"] - 1)]
                         + [(bm, bn, bk, max(s for s in range(2, 9) if C.hopper_smem_bytes(
                             C.make_hopper_config(bm, bn, bk, s)) <= C.HOPPER_SMEM_BYTES), bm)
                            for bm in (64, 128) for bn in C.TWO_PART_WIDTHS for bk in (128, 256)
                            if not (bn == 160 and bk == 256)])
def test_hopper_kernel_compiles_for_sm90(bm, bn, bk, stages, m, tmp_path):
    """The Gluon kernel compiled for sm_90 here, on the CPU (Triton ships ptxas): it must issue
    wgmma and TMA copies and set up the warp-specialised register split, with no local-memory
    spills (a spill of the accumulators would cost more than the kernel saves)."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    layout = "NVMMASharedLayout(swizzle_byte_width={}, element_bitwidth=8, rank=2, transposed=False, fp4_padded=False, cga_layout=[])"
    a_box, a_n = H.a_boxes(m, bm)
    tail = H.n_tail(bn)
    head = min(bn - tail, 128)  # A 256-wide tile is loaded as two 128-row boxes (triton_fp8_hopper.launch).

    def w_desc(cols):
        return f"tensordesc<fp8e4nv[{bk // 16}, {cols // 16}, 256],{layout.format(0).replace('rank=2', 'rank=3')}>"

    def c_desc(cols):
        # The output is written by TMA from 64-row staging tiles, up to 128 columns wide.
        bf16 = layout.format(min(128, 2 * cols)).replace("element_bitwidth=8", "element_bitwidth=16")
        return f"tensordesc<bf16[{min(64, a_box)}, {cols}],{bf16}>"

    sig = {"a_desc": f"tensordesc<fp8e4nv[{a_box}, 128],{layout.format(128)}>",  # boxes per 128 bytes of K
           "w_desc": w_desc(head), "w2_desc": w_desc(tail or head),
           "sa_ptr": "*fp32", "sb_ptr": "*fp32", "bias_ptr": "*bf16", "c_desc": c_desc(head),
           "c2_desc": c_desc(tail or head), "M": "i32", "N": "i32", "K": "i32"}
    c0, c1 = H.c_boxes(a_box, a_n)
    const = dict(HAS_BIAS=True, BLOCK_M=bm, BLOCK_N=bn, N_TAIL=tail, BLOCK_K=bk, STAGES=stages, GROUP_M=8,
                 A_BOX=a_box, A_BOXES=a_n, C0=c0, C1=c1)
    sig.update({k: "constexpr" for k in const})
    assert list(sig) == list(H.ARG_NAMES)
    src = GluonASTSource(H._fp8_gemm_hopper_kernel, sig, const, {(i,): [["tt.divisibility", 16]] for i in (3, 4, 5, 9, 10)})
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))
    ptx = ck.asm["ptx"]
    assert ptx.count("wgmma.mma_async") >= 2 and "setmaxnreg" in ptx
    assert re.search(r"cp\.async\.bulk\.tensor\.2d\.shared::\w+\.global", ptx), "A is not loaded by TMA"
    # The weight: one 3-D copy per stage and part (the [K / 16, N / 16, 256] view), not 256-byte-wide 2-D boxes.
    assert re.search(r"cp\.async\.bulk\.tensor\.3d\.shared::\w+\.global", ptx), "W is not one 3-D TMA copy"
    assert "cp.async.bulk.tensor.2d.global.shared" in ptx, "the output is not stored by TMA"
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if os.path.exists(cuobjdump):
        cubin = tmp_path / "k.cubin"
        cubin.write_bytes(ck.asm["cubin"])
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", str(cubin)], capture_output=True, text=True).stdout
        assert re.search(r"STACK:0 SHARED:\d+ LOCAL:0", usage), f"the kernel spills to local memory: {usage}"


@needs_gluon
@given(bn=st.integers(1, 512))
def test_two_part_tile_widths(bn):
    """A tile width is one power of two (no second part), or the largest power of two below it
    plus a smaller one of at least 16 columns (wgmma's and TMA's grain here), or not a width."""
    tail = H.n_tail(bn)
    if bn >= 16 and bn & (bn - 1) == 0:
        assert tail == 0
    elif tail == -1:
        head = 1 << (bn.bit_length() - 1) if bn else 0
        rest = bn - head
        assert bn < 16 or rest < 16 or rest & (rest - 1)
    else:
        head = bn - tail
        assert head & (head - 1) == 0 and tail & (tail - 1) == 0 and 16 <= tail < head
    # The kernel takes exactly its listed widths, each with the BLOCK_K its registers allow.
    for bk in (128, 256):
        cfg = C.make_hopper_config(64, bn, bk, 3)
        ok = bn in (32, 64, 128) or (bn in C.TWO_PART_WIDTHS and not (bn == 160 and bk == 256))
        if ok:
            H.check_config(cfg, 4096)
            assert H.n_tail(bn) >= 0
        else:
            with pytest.raises(ValueError, match="BLOCK_N in"):
                H.check_config(cfg, 4096)


@needs_gluon
def test_every_config_in_the_tuners_hopper_space_is_one_the_kernel_takes():
    for cfg in C.hopper_configs():
        if C.hopper_smem_bytes(cfg) <= C.HOPPER_SMEM_BYTES:
            H.check_config(cfg, 8192)
    assert {c["BLOCK_N"] for c in C.hopper_configs()} >= set(C.TWO_PART_WIDTHS)


@needs_gluon
@given(M=st.integers(1, 400), block_m=st.sampled_from([64, 128]))
def test_hopper_a_boxes_cover_m_with_little_waste(M, block_m):
    """A's TMA boxes: power-of-two rows (Triton's rule) at 8-row offsets (the 128-byte swizzle's
    period), covering min(M, BLOCK_M) rows within one tile, at most 8 of them (each is a copy the
    producer issues per stage), and at most 7 rows past M (15 past 64 rows): each costs time."""
    box, n = H.a_boxes(M, block_m)
    rows = min(M, block_m)
    assert box & (box - 1) == 0 and box % 8 == 0 and 1 <= n <= 8
    assert rows <= box * n <= block_m
    assert box * n - rows <= (7 if M <= 64 else 15)
    if box < 64:
        # The output goes out in the same boxes: consumer 0 stores rows from 0, consumer 1 rows
        # from 64; together exactly the rows loaded, and every row below M.
        c0, c1 = H.c_boxes(box, n)
        stored = [r for first, count in ((0, c0), (64, c1)) for r in range(first, first + count * box)]
        assert stored == list(range(box * n)), (M, block_m, box, n, c0, c1)
        assert c1 == 0 or block_m == 128



# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------

@pytest.mark.gpu
@gpu
@needs_gluon
@pytest.mark.parametrize("config", [C.make_hopper_config(64, 64, 256, 4), C.make_hopper_config(128, 64, 256, 4),
                                    C.make_hopper_config(128, 128, 256, 3), C.make_hopper_config(64, 128, 128, 2),
                                    C.make_hopper_config(128, 256, 128, 4), C.make_hopper_config(64, 32, 256, 6),
                                    # two-part tiles: 64 + 32, 128 + 32, 32 + 16, 64 + 16
                                    C.make_hopper_config(64, 96, 256, 4), C.make_hopper_config(128, 160, 128, 3),
                                    C.make_hopper_config(64, 48, 256, 6), C.make_hopper_config(128, 80, 256, 3)],
                         ids=["64x64x256", "128x64x256", "128x128x256", "64x128x128", "128x256x128", "64x32x256",
                              "64x96x256", "128x160x128", "64x48x256", "128x80x256"])
@pytest.mark.parametrize("M,N", [(1, 80), (9, 512), (17, 80), (64, 1040), (100, 512), (200, 512), (333, 1040)])
def test_gpu_hopper_kernel(config, M, N):
    """The sm_90 Gluon kernel: ragged M and N blocks (TMA reads zeros past the edges, the store
    masks them), M below BLOCK_M (A and the output in 8- or 16-row boxes, tile rows past them
    never loaded), both bias dtypes; error within the promoted (fp32) bound."""
    if not T.hopper_path(torch.device("cuda"), torch.float8_e4m3fn):
        pytest.skip("needs sm_90")
    bias = torch.bfloat16 if M % 2 else torch.float32
    c = make_case(M, N, 1024, torch.float8_e4m3fn, bias, device="cuda", seed=M + N)
    out = T.launch(config, *c.args)
    finished_or_fail(f"{config} M={M} N={N}")
    assert_close_to_truth(out, c, f"{config} M={M} N={N}")
    # The portable fallback would pass the numbers too: make sure the Gluon kernel ran.
    assert not T._hopper_failed, "the Gluon kernel failed and the portable kernel answered"
    # Persistent programs: with fewer programs than tiles each one runs several, the ring's
    # phases carrying over from tile to tile (3 does not divide the tile counts here, so
    # programs end on different stages; 1 runs every tile through one ring).
    for programs in (1, 3):
        out = H.launch(config, *c.args, programs=programs)
        finished_or_fail(f"{config} M={M} N={N} programs={programs}")
        assert_close_to_truth(out, c, f"{config} M={M} N={N} programs={programs}")


@pytest.mark.gpu
@gpu
@needs_gluon
@pytest.mark.parametrize("config", [(64, 128, 128, 4), (128, 64, 128, 4), (64, 32, 128, 6), (128, 160, 128, 4),
                                    (64, 96, 128, 4), (128, 96, 256, 3), (128, 128, 256, 3), (128, 256, 128, 4),
                                    (64, 32, 256, 6)], ids=lambda c: "x".join(map(str, c)))
def test_gpu_hopper_promotes_like_cublaslt(config):
    """Promotion, which the elementwise bound (2^-13 of the sum of |products|) is too loose to
    see: on values that cancel, ours must be about as exact as cuBLASLt with
    ``use_fast_accum=False``. An element is off when its error from float64 exceeds 4x
    cuBLASLt's plus 1% of the value. Measured on these very inputs (benchmarks/results/h200/
    diag_promotion.json): 0 of 2.6M for every config, 578 when 64-product chains were added,
    82,823 for cuBLASLt's fast accumulation."""
    if not T.hopper_path(torch.device("cuda"), torch.float8_e4m3fn):
        pytest.skip("needs sm_90")
    from hipbmm_inductor.bench.inputs import random_inputs

    torch.manual_seed(0)
    s = random_inputs(256, 10240, 8192, torch.float8_e4m3fn, False, "cuda")
    truth = (s.A.double() @ s.W.double().t()) * s.scale_a.double() * s.scale_b.double()
    base = torch._scaled_mm(s.A, s.W.t(), s.scale_a, s.scale_b, out_dtype=torch.bfloat16).double()
    ours = H.launch(C.make_hopper_config(*config), s.A, s.B, s.scale_a, s.scale_b, None, torch.bfloat16)
    finished_or_fail(f"{config} at M = 256, 10240 x 8192")
    ours = ours.double()
    off = (ours - truth).abs() > 4 * (base - truth).abs() + 1e-2 * truth.abs()
    assert int(off.sum()) == 0, f"{config}: {int(off.sum())} elements less exact than promoted cuBLASLt"


@pytest.mark.gpu
@gpu
@needs_gluon
def test_gpu_hopper_programs_must_be_positive():
    if not T.hopper_path(torch.device("cuda"), torch.float8_e4m3fn):
        pytest.skip("needs sm_90")
    c = make_case(64, 256, 256, torch.float8_e4m3fn, None, device="cuda", seed=0)
    with pytest.raises(ValueError, match="programs must be >= 1"):
        H.launch(C.make_hopper_config(64, 64, 128, 2), *c.args, programs=0)


@pytest.mark.gpu
@gpu
@needs_gluon
def test_gpu_hopper_falls_back_on_misaligned_a_and_on_failure(monkeypatch, caplog):
    if not T.hopper_path(torch.device("cuda"), torch.float8_e4m3fn):
        pytest.skip("needs sm_90")
    cfg = C.make_hopper_config(64, 64, 256, 4)
    c = make_case(40, 256, 512, torch.float8_e4m3fn, torch.bfloat16, device="cuda", seed=11)
    # A view 8 bytes into its storage: TMA cannot address it; the portable kernel serves it.
    store = torch.empty(c.A.numel() + 8, dtype=torch.uint8, device="cuda")
    A = store[8:].view(torch.float8_e4m3fn).view(c.A.shape)
    A.copy_(c.A)
    assert A.data_ptr() % 16 == 8
    out = T.launch(cfg, A, *c.args[1:])
    assert_close_to_truth(out, c, "misaligned A")
    # A Gluon failure (say, an API change in a newer Triton) costs speed, never the answer.
    def boom(*a, **k):
        raise RuntimeError("gluon broke")

    monkeypatch.setattr(H, "launch", boom)
    try:
        with caplog.at_level("WARNING", logger="hipbmm_inductor"):
            out = T.launch(cfg, *c.args)
        assert_close_to_truth(out, c, "after a Gluon failure")
        assert "Gluon kernel failed" in caplog.text and "gluon broke" in caplog.text
        assert not T.hopper_path(torch.device("cuda"), torch.float8_e4m3fn)
    finally:
        T._hopper_failed.clear()
        T.hopper_path.cache_clear()


def _constants_rebound_in_loops(source: str) -> list[str]:
    """``function:line name`` for each variable of a JIT function that is assigned before a loop
    and reassigned a Python constant inside it: a loop-carried value that Triton 3.6 dropped from
    the warp-specialised producer (its TTGIR started every tile's K loop at the first tile's
    start, so a program of several tiles hung on the GPU; 3.9 compiles it right, so only a
    check like this one sees it in CI)."""
    import ast

    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef) or not any("jit" in ast.unparse(d) for d in fn.decorator_list):
            continue
        for loop in ast.walk(fn):
            if not isinstance(loop, (ast.For, ast.While)):
                continue
            before = {t.id for node in ast.walk(fn) if isinstance(node, ast.Assign) and node.lineno < loop.lineno
                      for t in node.targets if isinstance(t, ast.Name)}
            for node in ast.walk(loop):
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and _is_literal(node.value):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    found += [f"{fn.name}:{node.lineno} {t.id}" for t in targets
                              if isinstance(t, ast.Name) and t.id in before]
    return found


def _is_literal(value) -> bool:
    """A Python number or constant as written (``0``, ``-1``, ``True``): what Triton treats as a
    constexpr rather than a tensor."""
    import ast

    if isinstance(value, ast.UnaryOp) and isinstance(value.op, (ast.USub, ast.UAdd)):
        value = value.operand
    return isinstance(value, ast.Constant)


def test_no_kernel_loop_rebinds_a_carried_variable_to_a_constant():
    """The pattern behind a hang on the GPU (see the helper): the check flags it, and no kernel
    of the Triton backend has it."""
    hung = """
@gluon.jit
def producer(first, n):
    start = first
    for tile in range(n):
        for i in range(start, 8):
            pass
        start = 0
"""
    assert _constants_rebound_in_loops(hung) == ["producer:8 start"]
    # The same with a negative or an annotated constant; a tensor expression is carried fine.
    assert _constants_rebound_in_loops(hung.replace("start = 0", "start = -1")) == ["producer:8 start"]
    assert _constants_rebound_in_loops(hung.replace("start = 0", "start: int = 0")) == ["producer:8 start"]
    assert _constants_rebound_in_loops(hung.replace("start = 0", "start = first * 0")) == []
    from pathlib import Path

    ops = Path(T.__file__).resolve().parent
    for name in ("triton_fp8_hopper.py", "triton_fp8_gemm.py"):
        assert _constants_rebound_in_loops((ops / name).read_text()) == [], name


def test_finished_or_fail_fails_instead_of_hanging(monkeypatch):
    """The GPU tests wait through finished_or_fail: work that never finishes fails the test with
    what was launched, after the deadline, instead of blocking the run; finished work returns."""
    polls = []

    class Event:  # a stand-in for torch.cuda.Event whose work finishes after `after` polls
        after = None

        def record(self):
            pass

        def query(self):
            polls.append(1)
            return Event.after is not None and len(polls) > Event.after

    monkeypatch.setattr(torch.cuda, "Event", Event)
    Event.after = 3
    finished_or_fail("done soon", timeout_s=5.0, poll_s=0.001)
    assert len(polls) == 4
    Event.after = None
    with pytest.raises(pytest.fail.Exception, match="never finishes: the GPU work did not finish within 0.05 s"):
        finished_or_fail("never finishes", timeout_s=0.05, poll_s=0.001)


@needs_gluon
def test_descriptors_refuse_a_weight_of_another_layout():
    """The weight's TMA descriptor takes B's address only: a B that is not the [K, N] prepacked
    weight with strides (1, K) (a plain [K, N] tensor, a K-slice of a larger weight) is refused
    by name instead of being read as if it were."""
    c = make_case(5, 256, 512, bias_dtype=None)
    p = H.prepare(C.make_hopper_config(64, 64, 128, 4), 5, 256, 512, False, c.A.device, programs=132)
    out = torch.empty(5, 256, dtype=torch.bfloat16)
    p.descriptors(c.A, c.B, out)  # the prepacked weight
    plain = c.B.contiguous()  # [K, N], strides (N, 1)
    wider = torch.empty(1024, 256, dtype=c.B.dtype).t().contiguous().t()[:512]  # strides (1, 1024)
    for bad in (plain, wider):
        with pytest.raises(ValueError, match=r"B must be the \[K, N\] = \[512, 256\] prepacked weight"):
            p.descriptors(c.A, bad, out)
