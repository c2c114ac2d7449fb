"""Every script under ``benchmarks/`` still runs: a stale one fails here, not on the next GPU session.

CPU (CI): each script imports (its module-level code only defines things), and ``--help`` parses;
``op_overhead.py`` and ``tables.py`` run for real (they need no GPU). GPU (marker ``gpu``): each
GPU script makes a short run with small arguments and writes its output.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
import torch

from tests.support.bench_scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "benchmarks")
SCRIPTS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(BENCH, "*.py")))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _run(args, timeout=300, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_every_script_is_covered():
    # Every script but the CPU-only ones (run for real above and below) has a short GPU run here.
    covered = {name.split(":")[0] for name in GPU_RUNS}
    missing = set(SCRIPTS) - {"tables.py", "aiter_overhead.py", "op_overhead.py"} - covered - set(CPU_ONLY)
    assert not missing, f"benchmark scripts without a GPU run in GPU_RUNS: {sorted(missing)}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_imports(name):
    load_script(name)


HELP_OK = [s for s in SCRIPTS if s != "tables.py"]


@pytest.mark.parametrize("name", HELP_OK)
def test_script_help_parses(name):
    r = _run([os.path.join(BENCH, name), "--help"], timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage" in r.stdout.lower()


def test_op_overhead_runs_on_cpu(tmp_path):
    out = tmp_path / "o.json"
    r = _run([os.path.join(BENCH, "op_overhead.py"), "--calls", "50", "--repeats", "2", "--out", str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    data = json.loads(out.read_text())
    us = data["us"]
    # The file rounds every figure to 3 decimals, so the difference of two rounded ones is off by <= 1e-3.
    assert us["overhead"] == pytest.approx(us["op"] - us["backend_run"], abs=2e-3)
    assert all(v > 0 for k, v in us.items() if not k.startswith("overhead"))


def test_tables_summarises_a_committed_result_and_names_bad_input(tmp_path):
    suite = sorted(glob.glob(os.path.join(BENCH, "results", "h200", "suite*.json")))
    assert suite, "no committed H200 suite result"
    r = _run([os.path.join(BENCH, "tables.py"), suite[0]])
    assert r.returncode == 0 and "geomean" in r.stdout, r.stderr[-2000:]
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    r = _run([os.path.join(BENCH, "tables.py"), str(bad)])
    assert r.returncode != 0 and "Traceback" not in r.stderr
    r = _run([os.path.join(BENCH, "tables.py")])
    assert r.returncode == 2 and "Traceback" not in r.stderr


# GPU: a short run of each, small enough for the GPU test session ("script:variant" names a
# second run of one script).
GPU_RUNS = {
    # The shipped kernel against itself: the same outputs, so the script's own check passes.
    "ab_hopper_build.py": ["--old-module", "hipbmm_inductor.ops.triton_fp8_hopper", "--shapes", "4096,4096", "--m",
                           "1", "--out", "{out}"],
    "ab_hopper_build.py:before": ["--old-module", "hipbmm_inductor.ops.triton_fp8_hopper", "--shapes", "4096,4096",
                                  "--m", "1", "--before", "elementwise", "--out", "{out}"],
    "host_cost.py": ["--shapes", "4096,4096", "--calls", "20", "--repeats", "2", "--no-compiled", "--out", "{out}"],
    "diag_a_box.py": ["--shapes", "4096,4096", "--m", "1", "--out", "{out}"],
    "diag_accumulation.py": ["--out", "{out}"],
    "diag_decode.py": ["--shapes", "4096,4096", "--m", "1", "--out", "{out}"],
    "diag_promotion.py": ["--shapes", "64,1280,1024", "--out", "{out}"],
    "diag_timeline.py": ["--shapes", "4096,4096", "--m", "1", "--out", "{out}"],
    "profile_demo.py": ["--tokens", "4", "--hidden", "256", "--intermediate", "512", "--replays", "3", "--out", "{out}"],
    "profile_demo.py:block": ["--model", "tiny", "--tokens", "4", "--replays", "3", "--out", "{out}"],
    "sweep_triton.py": ["--shapes", "4096,4096", "--m", "16", "--budget-s", "5", "--space", "production", "--out",
                        "{out}"],
    "tune_gain.py": ["--shapes", "4096,4096", "--m", "16", "--max-candidates", "2", "--budget-s", "20", "--out",
                     "{out}"],
}
CPU_ONLY: list = []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or bool(torch.version.hip), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("name", sorted(GPU_RUNS))
def test_gpu_short_run(name, tmp_path):
    out = str(tmp_path / "out.json")
    args = [a.replace("{out}", out) for a in GPU_RUNS[name]]
    r = _run([os.path.join(BENCH, name.split(":")[0]), *args], timeout=400, cwd=str(tmp_path))
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-3000:])
    assert os.path.exists(out), f"{name} wrote no {out}"


@pytest.mark.parametrize("script,args,says", [
    ("sweep_triton.py", ["--extra-hopper", "0,0,0,0"], "--extra-hopper: '0,0,0,0': hopper config"),
    ("sweep_triton.py", ["--extra-hopper", "64,64,128,-1"], "2 to 8 stages"),
    ("sweep_triton.py", ["--extra-hopper", "64,64,x,4"], "four integers"),
    ("diag_promotion.py", ["--shapes", "1,a,3"], "--shapes: expected comma-separated integers"),
    ("diag_promotion.py", ["--shapes", "64,128"], "--shapes: expected 'M,N,K;...'"),
    ("diag_decode.py", ["--configs", "heuristic"], "give it a grid, @P or @balanced"),
    ("diag_decode.py", ["--configs", "64x64x256/6@0"], "a positive count or 'balanced'"),
    ("ab_hopper_build.py", ["--old-module", "no/such/build.py"], "--old-module: no such file 'no/such/build.py'"),
    ("ab_hopper_build.py", ["--old-module", "no_such_module_here"], "--old-module: cannot import"),
    ("ab_hopper_build.py", ["--old-module", "hipbmm_inductor.ops.triton_fp8_hopper", "--before", "silu"],
     "argument --before: invalid choice: 'silu'"),
])
def test_bad_arguments_are_named_before_any_gpu_work(script, args, says):
    pytest.importorskip("triton.experimental.gluon")  # the sweep checks its extra configs with the kernel's rules
    r = _run([os.path.join(BENCH, script), *args], timeout=120)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]


def test_ab_build_loads_a_copy_of_the_kernel_module(tmp_path):
    """``--old-module`` given as a file: a pristine copy of ``ops/triton_fp8_hopper.py`` (relative
    imports and dataclasses included) loads; a file that does not is named, not a traceback."""
    pytest.importorskip("triton.experimental.gluon")
    ab = load_script("ab_hopper_build.py")
    copy = tmp_path / "old_triton_fp8_hopper.py"
    copy.write_text(open(os.path.join(ROOT, "ops", "triton_fp8_hopper.py")).read())
    old = ab.load_build(str(copy))
    assert callable(old.prepare) and callable(old.run_prepared) and old.ARG_NAMES
    broken = tmp_path / "broken.py"
    broken.write_text("from .no_such_module import x\n")
    with pytest.raises(ValueError, match="--old-module: .*broken.py.* does not load"):
        ab.load_build(str(broken))


def test_timeline_probe_is_the_shipped_kernel_with_stamps(tmp_path):
    """``diag_timeline.py`` builds its probe from the text of ``ops/triton_fp8_hopper.py``: the
    places it stamps must still be there (else it names the one that moved), and the probe must
    compile for sm_90 with every stamp in it."""
    pytest.importorskip("triton.experimental.gluon")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    tl = load_script("diag_timeline.py")
    with pytest.raises(ValueError, match="the barrier set-up found 0 times"):
        tl.probe_source(open(tl.KERNEL).read().replace("mbarrier.init(empty.index(j)", "mbarrier.init(empty.index(k)"))
    probe = tl.load_probe(str(tmp_path))
    layout = ("NVMMASharedLayout(swizzle_byte_width={}, element_bitwidth={}, rank={}, transposed=False, "
              "fp4_padded=False, cga_layout=[])")
    w = f"tensordesc<fp8e4nv[16, 4, 256],{layout.format(0, 8, 3)}>"
    c = f"tensordesc<bf16[8, 64],{layout.format(128, 16, 2)}>"
    sig = {"a_desc": f"tensordesc<fp8e4nv[8, 128],{layout.format(128, 8, 2)}>", "w_desc": w, "w2_desc": w,
           "sa_ptr": "*fp32", "sb_ptr": "*fp32", "bias_ptr": "*bf16", "c_desc": c, "c2_desc": c,
           "M": "i32", "N": "i32", "K": "i32"}
    const = dict(HAS_BIAS=False, BLOCK_M=64, BLOCK_N=64, N_TAIL=0, BLOCK_K=256, STAGES=6, GROUP_M=8, A_BOX=8,
                 A_BOXES=1, C0=1, C1=0)
    sig.update({k: "constexpr" for k in const})
    sig["st_ptr"] = "*i64"
    src = GluonASTSource(probe._fp8_gemm_hopper_kernel, sig, const, {})
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4)).asm["ptx"]
    assert ptx.count("%globaltimer") >= len(tl.NAMES), "a stamp was optimised away"
