"""Importing hipbmm_inductor never breaks or changes a model (tests/support/zoo.py's FP8 forms).

The zoo is compiled three ways, with freezing under ``no_grad``:

- *absent*: in a subprocess that never imports the package (the only honest "without": in this
  process the import hook has already installed the pass);
- *present, disabled*: here, ``hipbmm_inductor.disable()``;
- *present, enabled*: here, with the reference backend named (which opts the pass in on the CPU).

Every way compiles and matches eager. Disabled is bit-identical to absent (the pass must not touch
the graph); enabled is bit-identical to absent for every GEMM it does not rewrite, rewrites exactly
the ones ``zoo.REWRITES`` lists, and matches eager on those within the bf16 bound.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from hipbmm_inductor import lowering

from tests.support import zoo
from .conftest import assert_close_to_eager

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def absent(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "absent.pt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIPBMM_")}
    res = subprocess.run([sys.executable, os.path.join("tests", "support", "zoo.py"), str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.load(out)


@pytest.fixture(scope="module")
def eager():
    model, xs, extras = zoo.build()
    with torch.no_grad():
        return model(xs, extras)


def _close_to_eager(name, out, ref):
    if out.dtype == torch.bfloat16 or ref.dtype != torch.float32:
        # bf16 / fp16 outputs: at most one output rounding (2^-8 relative for bf16, 2^-11 for fp16)
        # plus the fp32 summation order; conftest's bound (2^-7, with an absolute floor) covers both.
        assert_close_to_eager(out, ref)
    else:
        # fp32 outputs of the same fp8 products: only the summation order differs, ~K * 2^-24.
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item(), msg=name)


def test_absent_compiles_and_matches_eager(absent, eager):
    assert set(absent) == set(zoo.ENTRIES)
    for name, out in absent.items():
        _close_to_eager(name, out, eager[name])


def _compile_here(enabled: bool):
    lowering.reset_counters()
    (lowering.enable if enabled else lowering.disable)()
    return zoo.compile_zoo()


def test_present_disabled_is_identical_to_absent(fresh, absent):
    out = _compile_here(enabled=False)
    for name in zoo.ENTRIES:
        assert torch.equal(out[name], absent[name]), name
    c = lowering.counters()
    assert c.rewritten == 0, c.as_dict()
    assert set(c.skipped) <= {"lowering disabled (HIPBMM_LOWERING=0 or hipbmm_inductor.disable())"}, c.as_dict()


def test_present_enabled_rewrites_what_it_can_and_changes_nothing_else(fresh, absent, eager):
    out = _compile_here(enabled=True)
    c = lowering.counters()
    assert not any("internal error" in r for r in c.skipped), c.as_dict()
    expected = sum(n for _, _, n in zoo.ENTRIES.values())
    assert c.rewritten == expected, c.format()
    for name, (_, _, rewrites) in zoo.ENTRIES.items():
        if rewrites:
            assert out[name].dtype == eager[name].dtype and out[name].shape == eager[name].shape, name
            _close_to_eager(name, out[name], eager[name])
        else:
            assert torch.equal(out[name], absent[name]), name
    # What is skipped is skipped for the real cause.
    reasons = c.skipped
    assert any(r.startswith("out_dtype torch.float16") for r in reasons), reasons
    assert any(r.startswith("out_dtype torch.float32") for r in reasons), reasons
    assert sum(n for r, n in reasons.items() if r.startswith("per-tensor scale_a")) == 5, reasons
    assert any(r.startswith("weight is a graph input") for r in reasons), reasons
    assert c.forms["channelwise"].rewritten == 6, c.format()
