"""hipbmm_inductor.hardware: every platform answer, on faked ROCm and NVIDIA GPUs and on the CPU,
and the per-device cache behind them."""

from __future__ import annotations

import platform
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from hipbmm_inductor import hardware
from hipbmm_inductor.ops import registry
from hipbmm_inductor.tuning import key

FNUZ, FN = torch.float8_e4m3fnuz, torch.float8_e4m3fn

# What torch.cuda.get_device_properties reports on each GPU (the fields hardware reads).
MI300X = SimpleNamespace(name="AMD Instinct MI300X", gcnArchName="gfx942:sramecc+:xnack-", major=9, minor=4,
                         multi_processor_count=304, L2_cache_size=4 << 20)
MI355X = SimpleNamespace(name="AMD Instinct MI355X", gcnArchName="gfx950:sramecc+:xnack-", major=9, minor=5,
                         multi_processor_count=256, L2_cache_size=4 << 20)
MI250X = SimpleNamespace(name="AMD Instinct MI250X", gcnArchName="gfx90a:sramecc+:xnack-", major=9, minor=0,
                         multi_processor_count=110, L2_cache_size=8 << 20)
NO_GCN = SimpleNamespace(name="AMD Radeon", gcnArchName="", major=0, minor=0, multi_processor_count=60,
                         L2_cache_size=2 << 20)
H100 = SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132,
                       L2_cache_size=50 << 20)
RTX5090 = SimpleNamespace(name="NVIDIA GeForce RTX 5090", major=12, minor=0, multi_processor_count=170,
                          L2_cache_size=96 << 20)
A100_NO_L2 = SimpleNamespace(name="NVIDIA A100-SXM4-80GB", major=8, minor=0, multi_processor_count=108)


@pytest.fixture
def gpus(monkeypatch):
    """``install(hip, *props)``: a torch build (``hip`` is ``torch.version.hip``) whose ``cuda:i``
    reports ``props[i]``, with an empty hardware cache; returns the list of indices probed."""
    monkeypatch.setattr(hardware, "_cache", {})
    probed: list[int] = []
    current = {"index": 0}

    def properties(device):
        index = torch.device(device).index
        probed.append(index)
        return installed[index]

    installed: tuple = ()

    def install(hip, *props, current_index: int = 0):
        nonlocal installed
        installed = props
        current["index"] = current_index
        monkeypatch.setattr(torch.version, "hip", hip)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(installed))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: current["index"])
        monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
        return probed

    install.current = current
    return install


@pytest.mark.parametrize(
    "hip, props, kind, arch, capability, fp8",
    [
        pytest.param("6.3", MI300X, "rocm", "gfx942", None, FNUZ, id="mi300x"),
        pytest.param("6.4", MI355X, "rocm", "gfx950", None, FN, id="mi355x"),
        pytest.param("6.3", MI250X, "rocm", "gfx90a", None, FN, id="mi250x-no-fp8"),
        pytest.param("6.3", NO_GCN, "rocm", None, None, FN, id="rocm-no-arch-name"),
        pytest.param(None, H100, "cuda", "sm_90", (9, 0), FN, id="h100"),
        pytest.param(None, RTX5090, "cuda", "sm_120", (12, 0), FN, id="sm120"),
        pytest.param(None, A100_NO_L2, "cuda", "sm_80", (8, 0), FN, id="a100"),
    ],
)
def test_gpu_answers(gpus, hip, props, kind, arch, capability, fp8):
    gpus(hip, props)
    dev = torch.device("cuda", 0)
    assert hardware.is_rocm() is (hip is not None)
    assert hardware.device_kind(dev) == kind
    assert hardware.arch(dev) == arch
    assert hardware.cuda_capability(dev) == capability
    assert hardware.fp8_dtype(dev) == fp8
    assert hardware.sm_count(dev) == props.multi_processor_count
    assert hardware.l2_bytes(dev) == getattr(props, "L2_cache_size", 50 << 20)
    assert hardware.device_name(dev) == props.name


@pytest.mark.parametrize("hip", [None, "6.3"], ids=["cuda-build", "rocm-build"])
def test_cpu_answers_without_asking_cuda(gpus, hip):
    probed = gpus(hip, H100)
    cpu = torch.device("cpu")
    assert hardware.device_kind(cpu) == "cpu"
    assert hardware.arch(cpu) is None
    assert hardware.cuda_capability(cpu) is None
    assert hardware.sm_count(cpu) is None and hardware.l2_bytes(cpu) is None
    assert hardware.fp8_dtype(cpu) == FN
    assert hardware.device_name(cpu) == (platform.processor() or platform.machine() or "cpu")
    assert hardware.device_name("meta") == (platform.processor() or platform.machine() or "meta")
    assert probed == []


@pytest.mark.parametrize("hip", [None, "6.3"], ids=["cuda-build", "rocm-build"])
def test_cuda_device_without_a_gpu(gpus, hip):
    probed = gpus(hip)  # a GPU build of torch on a machine without one
    for dev in ("cuda", "cuda:0", torch.device("cuda", 1)):
        assert hardware.arch(dev) is None
        assert hardware.cuda_capability(dev) is None
        assert hardware.sm_count(dev) is None and hardware.l2_bytes(dev) is None
        assert hardware.fp8_dtype(dev) == FN
        with pytest.raises(RuntimeError, match="no GPU is visible"):
            hardware.device_name(dev)
    assert probed == []
    gpus(hip, MI300X if hip else H100)  # the answer was not kept: once a GPU is visible it is asked
    assert hardware.arch("cuda:0") == ("gfx942" if hip else "sm_90")


@pytest.mark.parametrize(
    "arch, fp8",
    [("gfx940", FNUZ), ("gfx941", FNUZ), ("gfx942", FNUZ), ("gfx950", FN), ("gfx90a", FN), ("gfx1100", FN),
     ("sm_90", FN), ("sm_89", FN), (None, FN)],
)
def test_fp8_for_arch(arch, fp8):
    assert hardware.fp8_for_arch(arch) == fp8


def test_each_device_is_probed_once(gpus):
    probed = gpus("6.3", MI300X, MI355X)
    for _ in range(3):
        for dev in (torch.device("cuda", 0), "cuda:0", torch.device("cuda", 1)):
            hardware.arch(dev), hardware.fp8_dtype(dev), hardware.sm_count(dev), hardware.device_name(dev)
    assert sorted(probed) == [0, 1]
    assert hardware.arch("cuda:1") == "gfx950" and hardware.fp8_dtype(torch.device("cuda", 1)) == FN


def test_bare_cuda_follows_the_current_gpu(gpus):
    probed = gpus("6.3", MI300X, MI355X)
    assert hardware.arch("cuda") == "gfx942" and hardware.arch(torch.device("cuda")) == "gfx942"
    gpus.current["index"] = 1
    assert hardware.arch("cuda") == "gfx950" and hardware.fp8_dtype(torch.device("cuda")) == FN
    gpus.current["index"] = 0
    assert hardware.arch("cuda") == "gfx942"
    assert sorted(probed) == [0, 1]
    assert "cuda" not in hardware._cache and torch.device("cuda") not in hardware._cache


def test_a_cached_answer_is_kept_for_the_process(gpus):
    probed = gpus(None, H100)
    dev = torch.device("cuda", 0)
    hardware.sm_count(dev)
    # Whatever torch would now say, the first answer stands: later questions never reach it.
    gpus(None, RTX5090)
    assert hardware.sm_count(dev) == 132 and hardware.arch(dev) == "sm_90" and probed == [0]


def test_callers_read_their_answers_here(gpus, monkeypatch):
    monkeypatch.setattr(key, "_infos", {})
    monkeypatch.setattr(key, "library_versions", lambda: (("torch", "test"),))  # cached for the process
    gpus("6.3", MI300X, NO_GCN)
    assert key.device_info(torch.device("cuda", 0)) == key.DeviceInfo("gfx942", "AMD Instinct MI300X", "torch=test")
    # A tuning key needs a string where torch reports no architecture.
    assert key.device_info(torch.device("cuda", 1)).arch == "gfx_unknown"
    assert key.device_info(torch.device("cpu")).arch == "cpu"
    assert registry.auto_order(torch.device("cuda", 0)) == ["aiter", "triton", "reference"]
    gpus(None, H100)
    assert registry.auto_order(torch.device("cuda", 0)) == ["triton", "reference"]
    assert registry.auto_order(torch.device("cpu")) == ["reference"]


def test_import_initialises_no_gpu():
    # Every torch.cuda entry point that could start CUDA raises: importing the package and its
    # backends must touch none of them.
    code = (
        "import torch\n"
        "def boom(*a, **k): raise AssertionError('CUDA touched at import')\n"
        "for name in ('_lazy_init', 'init', 'get_device_properties', 'current_device', 'is_available', "
        "'device_count', 'get_device_capability', 'get_device_name'):\n"
        "    setattr(torch.cuda, name, boom)\n"
        "import hipbmm_inductor, hipbmm_inductor.hardware, hipbmm_inductor.status\n"
        "from hipbmm_inductor.ops import aiter_backend, registry, triton_backend\n"
        "from hipbmm_inductor.tuning import key\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks this machine's answers without a GPU")
def test_this_machine_without_a_gpu():
    assert hardware.arch("cpu") is None and hardware.device_kind("cpu") == "cpu"
    assert hardware.arch("cuda") is None and hardware.fp8_dtype("cuda") == FN
    with pytest.raises(RuntimeError, match="no GPU is visible"):
        hardware.device_name("cuda:0")
