"""Cached and imported configs are checked against the backend's config space before use."""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hipbmm_inductor import cli, tuning
from hipbmm_inductor.ops.triton_backend import KERNEL_VERSION, TritonBackend
from hipbmm_inductor.ops.triton_configs import CONFIG_KEYS, config_space, heuristic_config, hopper_configs
from hipbmm_inductor.tuning.key import device_info, m_bucket
from hipbmm_inductor.tuning.rows import Row, canonical_config, read_rows, render
from hipbmm_inductor.tuning.store import Store

from tests.support import tuning_fakes as fakes

PORTABLE = f"{KERNEL_VERSION}/promoted/portable"
BACKEND = TritonBackend()  # not the registered instance: its per-(N, K) space cache starts empty


def _extra(fast: bool, hopper: bool) -> str:
    return f"{KERNEL_VERSION}/{'fast' if fast else 'promoted'}/{'gluon' if hopper else 'portable'}"


def _triton_row(config: dict, M=16, N=64, K=128, extra=PORTABLE, measured_at="2026-11-24T03:00:00Z") -> Row:
    info = device_info(torch.device("cpu"))
    return Row(backend="triton", arch=info.arch, device_name=info.name, versions=info.versions,
               a_dtype="float8_e4m3fn", b_dtype="float8_e4m3fn", out_dtype="bfloat16", bias="none", n=N, k=K,
               m_bucket=m_bucket(M), extra=extra, config=canonical_config(config), time_us=1.0,
               default_time_us=2.0, measured_at=measured_at)


def _config_for(M=16, N=64, K=128) -> dict:
    """What the Triton backend would launch for this call (the tuner's answer; nothing runs)."""
    case = fakes.inputs(M=M, N=N, K=K)
    config, _ = BACKEND.config_for(*case)
    return config


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "hipbmm_inductor"]


# -- cached configs -----------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [{}, "block_k_48", "string_value", "hopper_on_portable", "not_in_space"])
def test_unusable_cached_config_falls_back_to_the_heuristic_with_one_warning(tuning_env, caplog, bad):
    heuristic = heuristic_config(16, 64, 128)
    config = {"block_k_48": {**heuristic, "BLOCK_K": 48}, "string_value": {**heuristic, "BLOCK_M": "16"},
              "hopper_on_portable": hopper_configs()[0],
              "not_in_space": {**heuristic, "BLOCK_M": 32}}.get(bad, {}) if bad else {}
    good = dict(config_space(16, 64, 128)[1])
    Store(str(tuning_env)).upsert("cpu", [_triton_row(config), _triton_row(good, M=64)], "x")
    tuning.reload()
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        for _ in range(3):
            assert _config_for(M=16) == heuristic  # not the unusable config: the heuristic runs
        assert _config_for(M=64) == good  # the usable row of the same file is used
        tuning.reload()
        assert _config_for(M=16) == heuristic
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings  # one warning, however many calls and reloads of the table
    assert "cannot launch" in warnings[0] and "heuristic" in warnings[0]


def test_rejected_config_never_reaches_the_launcher(tuning_env):
    # The backend end to end: with {} cached, the config its launch plan is built with is the
    # heuristic (the old failure was KeyError: 'BLOCK_M' inside the launcher).
    Store(str(tuning_env)).upsert("cpu", [_triton_row({})], "x")
    tuning.reload()
    config, _ = BACKEND.config_for(*fakes.inputs(M=16, N=64, K=128))
    assert config == heuristic_config(16, 64, 128)


# -- cache import -------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [{}, {"BLOCK_K": 48}])
def test_import_refuses_an_unusable_config_and_keeps_the_good_row(tuning_env, tmp_path, capsys, bad):
    good = heuristic_config(16, 64, 128)
    s = Store(str(tuning_env))
    s.upsert("cpu", [_triton_row(good)], "x")
    invalid = bad if not bad else {**good, **bad}
    other = dict(config_space(16, 128, 128)[0])
    shipped = tmp_path / "ship.csv"
    # Newer than the cached row: by the duplicate rule it would have replaced it.
    shipped.write_text(render([_triton_row(invalid, measured_at="2026-11-30T00:00:00Z"),
                               _triton_row(other, N=128)], "cpu", "x"))
    assert cli.main(["cache", "import", str(shipped)]) == 1
    err = capsys.readouterr().err
    refused = [line for line in err.splitlines() if "refused" in line]
    assert len(refused) == 1 and "triton" in refused[0] and "N=64" in refused[0]
    rows = {r.n: r.config_dict() for r in read_rows(s.path("cpu")).rows}
    assert rows == {64: good, 128: other}  # the good row stays; the valid new row is merged


def test_import_of_valid_rows_exits_zero(tuning_env, tmp_path):
    shipped = tmp_path / "ship.csv"
    shipped.write_text(render([_triton_row(heuristic_config(16, 64, 128))], "cpu", "x"))
    assert cli.main(["cache", "import", str(shipped)]) == 0


# -- properties of TritonBackend.config_error -----------------------------------------------------
_shapes = st.tuples(st.integers(1, 64).map(lambda x: 16 * x), st.integers(1, 64).map(lambda x: 32 * x))
_modes = st.tuples(st.booleans(), st.booleans())


def _union(N: int, K: int, fast: bool, hopper: bool) -> set:
    # Independent of config_error's own construction: every bucket M = 1 .. 8192 (a bucket past
    # 4096 must add nothing), candidates and heuristics alike.
    out = set()
    for M in range(1, 8193, 37):
        for c in config_space(M, N, K, fast, hopper) + [heuristic_config(M, N, K, fast, hopper)]:
            out.add(canonical_config(c))
    return out


@given(shape=_shapes, mode=_modes, M=st.integers(1, 10_000), pick=st.integers(0, 10_000))
def test_every_config_the_backend_would_launch_is_accepted(shape, mode, M, pick):
    (N, K), (fast, hopper) = shape, mode
    space = config_space(M, N, K, fast, hopper)
    for config in (space[pick % len(space)], heuristic_config(M, N, K, fast, hopper)):
        assert BACKEND.config_error(config, N, K, _extra(fast, hopper)) is None, config


_values = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 8, 16, 32, 48, 64, 96, 128, 256, 512, -16]),
                    st.integers(-2, 1 << 12), st.text(max_size=3), st.floats(allow_nan=True), st.booleans(),
                    st.none())


@given(shape=_shapes, mode=_modes, M=st.integers(1, 5000), pick=st.integers(0, 10_000),
       changes=st.dictionaries(st.sampled_from(CONFIG_KEYS + ("EXTRA", "block_m")), _values, max_size=3),
       drop=st.lists(st.sampled_from(CONFIG_KEYS), max_size=2))
def test_accepted_exactly_when_in_the_space(shape, mode, M, pick, changes, drop):
    (N, K), (fast, hopper) = shape, mode
    space = config_space(M, N, K, fast, hopper)
    config = {**space[pick % len(space)], **changes}
    for key in drop:
        config.pop(key, None)
    problem = BACKEND.config_error(config, N, K, _extra(fast, hopper))
    in_space = all(type(v) is int for v in config.values()) and canonical_config(config) in _union(N, K, fast, hopper)
    assert (problem is None) == in_space, (config, problem)
    if problem is not None:
        assert problem.strip()
        named = [k for k in list(changes) + drop if k in problem]
        if set(changes) - set(CONFIG_KEYS) or drop:
            assert named, problem  # a missing or unknown key is named


@given(shape=_shapes, pick=st.integers(0, 100), fast=st.booleans())
def test_hopper_configs_only_under_a_gluon_key(shape, pick, fast):
    N, K = shape
    config = hopper_configs()[pick % len(hopper_configs())]
    assert "portable kernel" in BACKEND.config_error(config, N, K, _extra(fast, False))


@pytest.mark.parametrize("extra", ["", "v0/promoted/portable", f"{KERNEL_VERSION}/slow/portable",
                                   f"{KERNEL_VERSION}/promoted"])
def test_foreign_or_malformed_tuning_key_is_rejected(extra):
    assert BACKEND.config_error(heuristic_config(16, 64, 128), 64, 128, extra) is not None


def test_cache_show_marks_an_unusable_row(tuning_env, capsys):
    Store(str(tuning_env)).upsert("cpu", [_triton_row({"BLOCK_K": 48})], "x")
    assert cli.main(["cache", "show", "--json"]) == 0
    (entry,) = __import__("json").loads(capsys.readouterr().out)["files"][0]["entries"]
    assert entry["unusable"] and "BLOCK_M" in entry["unusable"]
    assert cli.main(["cache", "show"]) == 0
    assert "UNUSABLE (the heuristic runs instead)" in capsys.readouterr().out


def test_import_keeps_the_caches_newer_row_and_says_so(tuning_env, tmp_path, capsys):
    newer_here = heuristic_config(16, 64, 128)
    older_shipped = dict(config_space(16, 64, 128)[0])
    s = Store(str(tuning_env))
    s.upsert("cpu", [_triton_row(newer_here, measured_at="2026-11-30T00:00:00Z")], "x")
    shipped = tmp_path / "ship.csv"
    shipped.write_text(render([_triton_row(older_shipped, measured_at="2026-11-01T00:00:00Z")], "cpu", "x"))
    assert cli.main(["cache", "import", str(shipped)]) == 0  # valid: merged by the rule, not refused
    assert "1 row(s) not taken" in capsys.readouterr().err
    assert [r.config_dict() for r in read_rows(s.path("cpu")).rows] == [newer_here]
    # .rejected keeps the CSV rows (behind # comments): readable, so importable again.
    assert [r.config_dict() for r in read_rows(s.path("cpu") + ".rejected").rows] == [older_shipped]


def test_the_op_runs_the_heuristic_over_unusable_cached_configs(tuning_env, tmp_path):
    # End to end on the real kernel (Triton's interpreter): {} and BLOCK_K=48 cached for two
    # shapes; every call must compute the right answer, with one warning.
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    heuristic = heuristic_config(16, 64, 128)
    tuned = next(c for c in config_space(128, 64, 128) if c != heuristic_config(128, 64, 128))
    # The third row is usable: its hit proves the worker's calls look up these very keys.
    Store(str(tuning_env)).upsert("cpu", [_triton_row({}, M=16), _triton_row({**heuristic, "BLOCK_K": 48}, M=64),
                                          _triton_row(tuned, M=128)], "x")
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=str(root), TRITON_INTERPRET="1", HIPBMM_BACKEND="triton",
               HIPBMM_TUNING_CACHE=str(tuning_env))
    r = subprocess.run([sys.executable, "-m", "tests.support.interpret_bad_cache_worker", str(out), "16", "40",
                        "128"],
                       cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    result = json.loads(out.read_text())
    if "skip" in result:
        pytest.skip(result["skip"])
    (warning,) = result["warnings"]
    assert "ignoring 2 cached config(s)" in warning
    assert result["counters"]["hits"] == 1 and result["counters"]["misses"] == 2


@pytest.mark.parametrize("bn", [48, 80, 96, 160])
def test_two_part_hopper_tiles_in_the_space_pass_the_check(bn):
    """The sm_90 kernel's tile widths between the powers of two are configs of its space, so a
    row the tuner recorded with one is usable; the portable kernel takes none of them."""
    gluon = _extra(False, True)
    for cfg in (c for c in hopper_configs() if c["BLOCK_N"] == bn):
        for N, K in ((10240, 8192), (5120, 14336)):
            if cfg in config_space(256, N, K, False, True) or cfg in config_space(64, N, K, False, True):
                assert BACKEND.config_error(cfg, N, K, gluon) is None, cfg
        portable = {**heuristic_config(256, 4096, 4096), "BLOCK_N": bn}
        assert "powers of two" in BACKEND.config_error(portable, 4096, 4096, PORTABLE)
