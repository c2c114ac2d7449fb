"""Several GPUs: the op on a non-current device, graphs captured there, a model split across two
GPUs, two tuning processes sharing one cache folder, and tensors on two GPUs rejected.

Every test here needs two NVIDIA GPUs and skips otherwise (the single-GPU part of the device
guard is tested in ``tests/ops/test_triton_plan_gpu.py``). Tolerances: ``inputs.assert_close_to_truth``
(one bf16 ulp plus the fp32 accumulation bound against float64 truth).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import hipbmm_inductor as hi
from hipbmm_inductor import tuning
from hipbmm_inductor.ops import registry

from tests.support.inputs import assert_close_to_truth, make_case

two_gpus = pytest.mark.skipif(
    not torch.cuda.is_available() or bool(torch.version.hip) or torch.cuda.device_count() < 2,
    reason="needs two NVIDIA GPUs",
)
pytestmark = [pytest.mark.gpu, two_gpus]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _triton_on_cuda0():
    hi.set_backend("triton")
    torch.cuda.set_device(0)
    yield
    torch.cuda.set_device(0)


def test_inputs_on_cuda1_launch_on_cuda1s_current_stream():
    c = make_case(16, 2048, 1024, bias_dtype=torch.bfloat16, device="cuda:1", seed=1)
    side = torch.cuda.Stream(device="cuda:1")
    before = torch.cuda.memory_allocated(0)
    with torch.cuda.stream(side):  # cuda:1's current stream is `side`; cuda:0 stays current
        assert torch.cuda.current_device() == 0
        outs = [hi.hipb_mm_fp8(*c.args)]  # builds the plan (through Triton, on its current stream)
        plan = next(p for k, p in registry.get_backend("triton")._plans.items() if k[0] == torch.device("cuda:1"))
        streams = []
        if plan.fast is not None:  # record the stream every relaunch is given (its 4th argument)
            raw = plan.fast.launch_raw
            plan.fast.launch_raw = lambda *a: (streams.append(a[3]), raw(*a))
        outs += [hi.hipb_mm_fp8(*c.args) for _ in range(2)]
        side.synchronize()
    if plan.fast is not None:
        assert streams == [side.cuda_stream] * 2, "a relaunch did not go to cuda:1's current stream"
    assert torch.cuda.memory_allocated(0) == before, "the calls allocated on cuda:0"
    assert torch.cuda.current_device() == 0
    for o in outs:
        assert o.device == torch.device("cuda:1")
        assert_close_to_truth(o, c, "cuda:1 inputs, cuda:0 current, side stream")


def test_cuda_graph_captured_on_cuda1():
    c = make_case(8, 1024, 1024, bias_dtype=None, device="cuda:1", seed=2)
    with torch.cuda.device(1):
        hi.hipb_mm_fp8(*c.args)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = hi.hipb_mm_fp8(*c.args)
        fresh = make_case(8, 1024, 1024, bias_dtype=None, device="cuda:1", seed=3)
        c.A.copy_(fresh.A)
        g.replay()
        torch.cuda.synchronize()
    assert torch.equal(out, hi.hipb_mm_fp8(*c.args))


def test_compiled_model_split_across_two_gpus():
    from hipbmm_inductor.models import FP8Linear

    l0 = FP8Linear(1024, 2048, scale_layout="1n", device="cuda:0", fp8=torch.float8_e4m3fn, seed=0)
    l1 = FP8Linear(2048, 1024, scale_layout="1n", device="cuda:1", fp8=torch.float8_e4m3fn, seed=1)

    class Split(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l0, self.l1 = l0, l1

        def forward(self, x):
            return self.l1(self.l0(x).to("cuda:1"))

    model = Split()
    x = torch.randn(16, 1024, device="cuda:0", dtype=torch.bfloat16)
    torch._dynamo.reset()
    hi.lowering.reset_counters()
    with torch.no_grad(), torch._inductor.config.patch(freezing=True):
        out = torch.compile(model)(x)
        hi.set_backend(None)
        hi.disable()
        try:
            torch._dynamo.reset()
            ref = torch.compile(model)(x)
        finally:
            hi.enable()
            hi.envs.set_override("HIPBMM_LOWERING", None)
    assert out.device == torch.device("cuda:1")
    # Both compiles quantise the same way; the GEMMs differ only in summation order before one
    # bf16 rounding per layer, which the second layer's quantisation can amplify by one fp8 step.
    assert ((out.float() - ref.float()).abs() <= 0.02 * ref.float().abs().max()).all()


def test_two_processes_one_per_gpu_tune_into_one_folder(tmp_path):
    worker = (
        "import sys, torch, hipbmm_inductor as hi\n"
        "from hipbmm_inductor import tuning\n"
        "from tests.support.inputs import make_case\n"
        "dev = int(sys.argv[1]); torch.cuda.set_device(dev); hi.set_backend('triton'); tuning.set_mode('online')\n"
        "for n in (1024, 2048):\n"
        "    c = make_case(16, n, 1024 * (dev + 1), bias_dtype=None, device=f'cuda:{dev}', seed=n)\n"
        "    hi.hipb_mm_fp8(*c.args)\n"
        "print(tuning.counters()['tuned'])\n"
    )
    env = dict(os.environ, HIPBMM_TUNING_CACHE=str(tmp_path), PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-c", worker, str(d)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for d in (0, 1)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
        assert int(out.strip().splitlines()[-1]) == 2
    tuning.set_cache_dir(str(tmp_path))
    try:
        rows = tuning.tuner().store.load("sm_90")  # both GPUs are H200s: one file for the architecture
        ks = sorted({(r.n, r.k) for r in rows})
    finally:
        tuning.set_cache_dir(None)
    assert ks == [(1024, 1024), (1024, 2048), (2048, 1024), (2048, 2048)], json.dumps([str(r) for r in rows])


def test_tensors_on_two_gpus_are_rejected_in_fake_and_real_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    c = make_case(4, 1024, 1024, bias_dtype=None, device="cuda:0", seed=4)
    sb1 = c.scale_b.to("cuda:1")
    with pytest.raises(hi.HipbmmInputError, match="scale_b: every tensor must be on one device"):
        hi.hipb_mm_fp8(c.A, c.B, c.scale_a, sb1)
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in (c.A, c.B, c.scale_a, sb1)]
        with pytest.raises(hi.HipbmmInputError, match="scale_b: every tensor must be on one device"):
            torch.ops.hipbmm.hipb_mm_fp8(*fake)
