"""The Triton backend: kernel numerics (CPU interpreter and GPU), configs, availability, graphs, compile
(the sm_90 kernel's own tests: ``test_triton_hopper.py``).

CPU (CI): the kernel runs under ``TRITON_INTERPRET=1`` in one child process
(:mod:`tests.support.triton_interpret_worker`) on small shapes (M = 1, odd M, bias in bf16 / fp32 / none, both fp8
flavours, split-K, the fp16-widening path) and is compared here with the float64 oracle and the
reference backend. GPU (marker ``gpu``): the Llama-3 suite shapes, CUDA-graph capture and replay,
and ``torch.compile`` with a dynamic M that must not recompile.

Tolerances. Against float64 truth: :func:`inputs.error_bound` (one bf16 ulp, 2^-7 relative, plus
the gamma_K bound of fp32 accumulation; the fp8 inputs are exact). Against the reference backend:
both round an fp32 value to bf16 once, and the two fp32 values differ only by summation order
(far below a bf16 ulp), so they may land on either side of a rounding boundary: at most one bf16
ulp apart, i.e. 2^-7 of the magnitude (plus a tiny absolute term for values near zero).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import hipbmm_inductor as hi
from hipbmm_inductor import envs
from hipbmm_inductor.ops import registry

from tests.support.inputs import assert_close_to_truth, error_bound, float64_oracle, make_case, tensor_core_accumulation

triton = pytest.importorskip("triton")
T = pytest.importorskip("hipbmm_inductor.ops.triton_fp8_gemm")
from hipbmm_inductor.ops import triton_configs as C  # noqa: E402
from hipbmm_inductor.ops.triton_backend import TritonBackend  # noqa: E402


HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(os.path.dirname(HERE), "support", "triton_interpret_worker.py")
has_gpu = torch.cuda.is_available()
gpu = pytest.mark.skipif(not has_gpu, reason="needs a CUDA/ROCm GPU")


# ---------------------------------------------------------------------------------------------
# CPU: the kernel under TRITON_INTERPRET=1, in one child process
# ---------------------------------------------------------------------------------------------

_SHAPES = [(1, 32, 64), (17, 48, 96), (64, 64, 256), (33, 16, 32), (5, 80, 160)]
_BIASES = [None, "bfloat16", "float32"]
_FP8 = ["float8_e4m3fn", "float8_e4m3fnuz"]


def _interpret_cases() -> list[dict]:
    cases = []
    for i, (M, N, K) in enumerate(_SHAPES):
        for fp8 in _FP8:
            bias = _BIASES[(i + len(cases)) % 3]
            cases.append(dict(path="op", M=M, N=N, K=K, fp8=fp8, bias=bias, seed=i))
    # Explicit configs: split-K (the fp32 workspace + epilogue kernel), blocks wider than N
    # (wrapped rows), several M blocks with a ragged last one.
    cases.append(dict(path="config", M=17, N=48, K=192, fp8="float8_e4m3fn", bias="float32", seed=7,
                      config=C.make_config(16, 32, 32, 4, 2, split_k=3)))
    cases.append(dict(path="config", M=40, N=16, K=128, fp8="float8_e4m3fnuz", bias="bfloat16", seed=8,
                      config=C.make_config(16, 64, 64, 4, 2, split_k=2)))
    cases.append(dict(path="config", M=70, N=96, K=64, fp8="float8_e4m3fn", bias=None, seed=9,
                      config=C.make_config(32, 32, 64, 4, 2, group_m=2)))
    # C^T = W A^T (fast accumulation above M = 64), ragged M and N blocks, both flavours; A_TMA
    # asks for a TMA descriptor, which the launcher declines off Hopper (the pointer path runs).
    cases.append(dict(path="config", M=50, N=80, K=128, fp8="float8_e4m3fn", bias="float32", seed=12,
                      config=C.make_config(32, 64, 64, 4, 2, swap_ab=1, a_tma=1), fast_accum=True))
    cases.append(dict(path="config", M=3, N=32, K=64, fp8="float8_e4m3fnuz", bias="bfloat16", seed=13,
                      config=C.make_config(16, 32, 32, 4, 2, swap_ab=1), fast_accum=True))
    # The whole op with HIPBMM_TRITON_ACCUMULATION=fast, in the swapped (M > 64) bucket.
    cases.append(dict(path="op_fast", M=70, N=64, K=128, fp8="float8_e4m3fn", bias="bfloat16", seed=14))
    # The fp16-widening path (fnuz on NVIDIA, GPUs without fp8 units), both flavours.
    for j, fp8 in enumerate(_FP8):
        cases.append(dict(path="upcast", M=19, N=32, K=128, fp8=fp8, bias="bfloat16", seed=10 + j))
    for j, c in enumerate(cases):
        c["id"] = f"{c['path']}-M{c['M']}-N{c['N']}-K{c['K']}-{c['fp8']}-bias_{c['bias']}-{j}"
    return cases


INTERPRET_CASES = _interpret_cases()


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    d = tmp_path_factory.mktemp("triton_interpret")
    cases_path, out_path = d / "cases.json", d / "out.pt"
    cases_path.write_text(json.dumps(INTERPRET_CASES))
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, WORKER, str(cases_path), str(out_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"interpreter worker failed:\n{proc.stderr[-4000:]}"
    results = torch.load(out_path)
    if "skip" in results:
        pytest.skip(results["skip"])
    return results


@pytest.mark.parametrize("case", INTERPRET_CASES, ids=[c["id"] for c in INTERPRET_CASES])
def test_interpreted_kernel_matches_reference(interpreted, case):
    bias = None if case["bias"] is None else getattr(torch, case["bias"])
    c = make_case(case["M"], case["N"], case["K"], getattr(torch, case["fp8"]), bias, seed=case["seed"])
    assert_close_to_truth(interpreted[case["id"]], c, case["id"])


# ---------------------------------------------------------------------------------------------
# Configs and availability (no kernel runs)
# ---------------------------------------------------------------------------------------------

def test_launch_rejects_bad_config():
    c = make_case(4, 32, 96, bias_dtype=None)
    with pytest.raises(ValueError, match="K % \\(BLOCK_K \\* SPLIT_K\\) == 0"):
        T.launch(C.make_config(16, 32, 64, 4, 2), *c.args)


@pytest.mark.skipif(has_gpu, reason="checks the CPU-only answer")
def test_unavailable_on_cpu_without_interpreter():
    envs.set_override("TRITON_INTERPRET", False)
    try:
        av = TritonBackend().availability(torch.device("cpu"))
        assert not av and "TRITON_INTERPRET=1" in av.reason
        assert not TritonBackend().is_fast(torch.device("cpu"))
        hi.set_backend("triton")
        with pytest.raises(hi.BackendUnavailableError, match="TRITON_INTERPRET"):
            registry.backend_for(torch.device("cpu"))
    finally:
        envs.set_override("TRITON_INTERPRET", None)


def test_available_on_cpu_with_interpreter():
    envs.set_override("TRITON_INTERPRET", True)
    try:
        av = TritonBackend().availability(torch.device("cpu"))
        assert av and "interpreter" in av.reason
    finally:
        envs.set_override("TRITON_INTERPRET", None)


def test_native_fp8_table():
    fn, fnuz = torch.float8_e4m3fn, torch.float8_e4m3fnuz
    assert T.native_fp8("cuda", "sm_90", fn) and not T.native_fp8("cuda", "sm_90", fnuz)
    assert not T.native_fp8("cuda", "sm_80", fn)
    assert T.native_fp8("cuda", "gfx942", fnuz) and not T.native_fp8("cuda", "gfx942", fn)
    assert T.native_fp8("cuda", "gfx950", fn)


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------

SUITE = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336),
         (10240, 8192), (8192, 8192), (57344, 8192), (8192, 28672)]


@pytest.fixture
def triton_on_gpu():
    hi.set_backend("triton")
    yield torch.device("cuda")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("N,K", SUITE, ids=[f"{n}x{k}" for n, k in SUITE])
@pytest.mark.parametrize("M", [1, 17, 256])
def test_gpu_suite_numerics(triton_on_gpu, N, K, M):
    bias = (None, torch.bfloat16, torch.float32)[M % 3]
    c = make_case(M, N, K, torch.float8_e4m3fn, bias, device="cuda", seed=M)
    assert_close_to_truth(hi.hipb_mm_fp8(*c.args), c, f"M={M} N={N} K={K}")


@pytest.mark.gpu
@gpu
@given(st.integers(1, 300), st.integers(1, 24).map(lambda x: 16 * x), st.integers(1, 24).map(lambda x: 32 * x),
       st.sampled_from([torch.float8_e4m3fn, torch.float8_e4m3fnuz]), st.sampled_from([None, torch.bfloat16, torch.float32]))
def test_gpu_random_shapes(M, N, K, fp8, bias):
    hi.set_backend("triton")
    c = make_case(M, N, K, fp8, bias, device="cuda", seed=M * 7 + N + K)
    assert_close_to_truth(hi.hipb_mm_fp8(*c.args), c, f"M={M} N={N} K={K} {fp8} bias={bias}")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("config", [C.make_config(16, 32, 128, 4, 3, split_k=4), C.make_config(64, 128, 128, 4, 3),
                                    C.make_config(128, 256, 128, 8, 3), C.make_config(256, 128, 128, 8, 3, a_tma=1),
                                    C.make_config(64, 128, 256, 4, 4, a_tma=1)],
                         ids=["splitk4", "64x128", "128x256", "tma256x128", "tma64x128x256"])
def test_gpu_explicit_configs(config):
    # M = 200: a ragged last M block, which TMA fills with zeros and the store masks out.
    c = make_case(200, 512, 1024, torch.float8_e4m3fn, torch.bfloat16, device="cuda", seed=3)
    assert_close_to_truth(T.launch(config, *c.args), c, str(config))


@pytest.mark.gpu
@gpu
def test_gpu_split_k_per_call_workspace():
    """Split-K's fp32 partials live in a per-call workspace reduced in a fixed order: calls on
    two streams at once and replays of a captured graph each sum only their own partials, and
    give bit-identical results."""
    cfg = C.make_config(16, 32, 128, 4, 3, split_k=4)
    cases = [make_case(M, 4096, 2048, torch.float8_e4m3fn, torch.bfloat16, device="cuda", seed=M) for M in (1, 16)]
    ref = [T.launch(cfg, *c.args) for c in cases]
    for r, c in zip(ref, cases):
        assert_close_to_truth(r, c, "split-K, one stream")
    streams = [torch.cuda.Stream() for _ in cases]
    torch.cuda.synchronize()
    outs = [[None] * 20 for _ in cases]
    for s, c, o in zip(streams, cases, outs):
        with torch.cuda.stream(s):
            for i in range(len(o)):
                o[i] = T.launch(cfg, *c.args)
    torch.cuda.synchronize()
    for r, o in zip(ref, outs):
        assert all(torch.equal(x, r) for x in o), "split-K calls on concurrent streams disagree"
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        captured = [T.launch(cfg, *c.args) for c in cases]
    for _ in range(5):
        for x in captured:
            x.zero_()
        g.replay()
        torch.cuda.synchronize()
        assert all(torch.equal(x, r) for x, r in zip(captured, ref)), "a replay summed the wrong partials"


def _rel_err(out: torch.Tensor, truth: torch.Tensor) -> float:
    return ((out.double() - truth).norm() / truth.norm()).item()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("M,N,K", [(17, 4096, 4096), (256, 4096, 14336), (1024, 8192, 8192), (300, 1024, 28672)])
def test_gpu_accumulation_modes(triton_on_gpu, M, N, K):
    """``promoted`` sits at the bf16 rounding floor; ``fast`` within a few times it.

    Norm-wise, against float64 truth, relative to the error of rounding the truth itself to bf16
    (the least any bf16 output can have). Measured on H100 (benchmarks/results/
    h100/accumulation.json): promoted 1.003x the floor, fast 1.3x (K = 4096) to 2.8x (K = 28672),
    exactly what ``torch._scaled_mm(use_fast_accum=True)`` shows. So: promoted <= 1.02x (a kernel
    that silently stopped promoting fails at K >= 4096 once M > 16, where wgmma runs), fast <= 4x
    (a wrong layout or a lost K slice is off by O(1), not by a few bf16 ulps).
    """
    c = make_case(M, N, K, torch.float8_e4m3fn, None, device="cuda", seed=5)
    truth = float64_oracle(c)
    floor = _rel_err(truth.to(torch.bfloat16), truth)
    errs = {}
    for mode in ("promoted", "fast"):
        envs.set_override("HIPBMM_TRITON_ACCUMULATION", mode)
        try:
            errs[mode] = _rel_err(hi.hipb_mm_fp8(*c.args), truth) / floor
        finally:
            envs.set_override("HIPBMM_TRITON_ACCUMULATION", None)
    assert errs["promoted"] <= 1.02, errs
    assert errs["fast"] <= 4.0, errs


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("config", [C.make_config(128, 64, 128, 8, 4, swap_ab=1), C.make_config(64, 128, 128, 4, 3, swap_ab=1),
                                    C.make_config(256, 128, 128, 8, 4, swap_ab=1, a_tma=1)],
                         ids=["swap128x64", "swap64x128", "swap256x128tma"])
def test_gpu_explicit_configs_fast_accumulation(config):
    """Swapped tiles run only unpromoted: norm-wise within 4x the bf16 floor, as in
    :func:`test_gpu_accumulation_modes`; the same config without ``fast_accum`` is promoted."""
    c = make_case(200, 512, 1024, torch.float8_e4m3fn, torch.bfloat16, device="cuda", seed=3)
    out = T.launch(config, *c.args, fast_accum=True)
    truth = float64_oracle(c)
    floor = _rel_err(truth.to(torch.bfloat16), truth)
    assert _rel_err(out, truth) <= 4.0 * floor, config
    # And the same config promoted (swap declined) is back at the floor.
    assert _rel_err(T.launch(config, *c.args), truth) <= 1.02 * floor, config


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("M", [1, 16, 100])
def test_gpu_cuda_graph_capture_and_replay(triton_on_gpu, M):
    c = make_case(M, 1024, 512, torch.float8_e4m3fn, torch.bfloat16, device="cuda", seed=1)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        hi.hipb_mm_fp8(*c.args)  # warm-up outside capture: compiles the kernel
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = hi.hipb_mm_fp8(*c.args)
    # New data in the captured buffers: replay must compute on it.
    c2 = make_case(M, 1024, 512, torch.float8_e4m3fn, torch.bfloat16, device="cuda", seed=2)
    for dst, src in zip((c.A, c.B, c.scale_a, c.scale_b, c.bias), (c2.A, c2.B, c2.scale_a, c2.scale_b, c2.bias)):
        dst.copy_(src)
    graph.replay()
    torch.cuda.synchronize()
    assert_close_to_truth(out.clone(), c2, f"graph replay M={M}")


@pytest.mark.gpu
@gpu
def test_gpu_compile_dynamic_m_no_recompile(triton_on_gpu):
    N, K = 512, 1024
    base = make_case(8, N, K, torch.float8_e4m3fn, torch.bfloat16, device="cuda", seed=0)

    def f(A, B, sa, sb, bias):
        return torch.ops.hipbmm.hipb_mm_fp8(A, B, sa, sb, bias, torch.bfloat16) * 2

    torch._dynamo.reset()
    cf = torch.compile(f, fullgraph=True, dynamic=True)
    # NOTE: M=1 is left out of the no-recompile sequence on purpose: Dynamo specialises sizes 0
    # and 1 even under dynamic=True, so M=1 gets its own graph (once, not per M).
    for i, M in enumerate([8, 17, 333, 64, 2]):
        c = make_case(M, N, K, torch.float8_e4m3fn, torch.bfloat16, device="cuda", seed=i)
        c.W, c.B, c.scale_b, c.bias = base.W, base.B, base.scale_b, base.bias
        ctx = torch._dynamo.config.patch(error_on_recompile=True) if i else contextlib.nullcontext()
        with ctx:
            out = cf(c.A, c.B, c.scale_a, c.scale_b, c.bias)
        # x2 is exact in bf16, so the bound of the op itself applies, doubled.
        bound = error_bound(c) + tensor_core_accumulation(c)
        assert ((out.double() - 2 * float64_oracle(c)).abs() <= 2 * bound).all(), M


@pytest.mark.gpu
@gpu
def test_gpu_lowering_pass_selects_triton_end_to_end():
    """The Inductor pass rewrites a model's scaled-mm linears to hipb_mm_fp8, served by this backend."""
    root = os.path.dirname(os.path.dirname(HERE))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIPBMM_")}
    cmd = [sys.executable, "-m", "hipbmm_inductor", "demo", "--tokens", "17", "--hidden", "256",
           "--intermediate", "512", "--iters", "2", "--device", "cuda", "--backend", "triton"]
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "backend=triton" in out, out
    # Where Dynamo cannot trace F.scaled_mm (2.11), the demo writes that layer as _scaled_mm too.
    from hipbmm_inductor.compat import DYNAMO_TRACES_SCALED_MM_V2

    n = 1 if DYNAMO_TRACES_SCALED_MM_V2 else 2
    assert f"scaled_mm: matched {n}, rewritten {n}, skipped 0" in out, out
    assert "channelwise: matched 1, rewritten 1, skipped 0" in out, out
    calls = int(re.search(r"hipb_mm_fp8 calls in generated code: (\d+)", out).group(1))
    assert calls >= 2 and "weights folded: True" in out and "shuffle_weight calls per run: 0" in out, out
    err, without = map(float, re.search(r"max \|compiled - eager\| = (\S+) .*without the rewrite: (\S+)", out).groups())
    # Both compiled models accumulate in fp32 (ours with fp32 promotion) and round once to bf16:
    # they differ from eager by at most one more bf16 rounding of |out| <= 4 (2^-8 * 4), plus
    # the fp8 tensor-core accumulation term (2^-14 relative), far smaller.
    assert err <= without + 2**-8 * 4, out


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dynamic", [False, True])
def test_gpu_compiled_graph_calls_the_plan_directly(triton_on_gpu, dynamic):
    """On CUDA the rewritten node is a direct call into the launch plan (lowering/extern_call.py),
    writing into Inductor's buffer."""
    from torch._inductor.utils import run_and_get_code

    from hipbmm_inductor.models import FP8Linear

    m = FP8Linear(1024, 512, bias=True, scale_layout="1n", device="cuda", fp8=torch.float8_e4m3fn, seed=4).eval()
    x = torch.randn(16, 1024, device="cuda", dtype=torch.bfloat16)
    torch._dynamo.reset()
    hi.lowering.reset_counters()
    with torch.no_grad(), torch._inductor.config.patch(freezing=True):
        out, codes = run_and_get_code(torch.compile(m, dynamic=dynamic), x)
        ref = m(x).float()
    code = "\n".join(codes)
    assert hi.lowering.counters().rewritten == 1
    assert "hipb_mm_fp8_out(" in code and "hipbmm.hipb_mm_fp8.default(" not in code, code
    # Against eager _scaled_mm on the same fp8 values: both accumulate in fp32 and round once to
    # bf16, so they differ by one bf16 rounding (2^-8 relative) plus summation order; 2^-7
    # relative with a floor of 2^-7 of the largest |output| (cancellation) covers both.
    torch.testing.assert_close(out.float(), ref, rtol=2**-7, atol=2**-7 * ref.abs().max().item())
