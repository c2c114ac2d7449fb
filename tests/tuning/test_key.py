"""Key parts: M buckets, dtype names, device and library versions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hipbmm_inductor import __version__
from hipbmm_inductor.tuning.key import device_info, dtype_name, library_versions, m_bucket, parse_dtype, safe_arch


@given(st.integers(1, 1 << 20))
def test_m_bucket_is_smallest_power_of_two_at_least_m(m):
    b = m_bucket(m)
    assert b >= m and b & (b - 1) == 0 and (b == 1 or b // 2 < m)


@pytest.mark.parametrize("m,b", [(1, 1), (2, 2), (3, 4), (16, 16), (17, 32), (4096, 4096), (4097, 8192)])
def test_m_bucket_examples(m, b):
    assert m_bucket(m) == b


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.bfloat16, torch.float32, None])
def test_dtype_names_round_trip(dtype):
    assert parse_dtype(dtype_name(dtype)) == dtype


@pytest.mark.parametrize("name", ["float9_e4m3", "Tensor", "", "__class__"])
def test_unknown_dtype_name(name):
    with pytest.raises(ValueError, match="unknown dtype"):
        parse_dtype(name)


def test_versions_name_this_package_and_torch():
    versions = dict(library_versions())
    assert versions["hipbmm_inductor"] == __version__
    assert versions["torch"] == torch.__version__
    info = device_info(torch.device("cpu"))
    assert info.arch == "cpu" and info.name
    assert f"torch={torch.__version__}" in info.versions
    assert device_info(torch.device("cpu")) is info  # probed once


@pytest.mark.parametrize("arch,safe", [("gfx942", "gfx942"), ("gfx942:sramecc+:xnack-", "gfx942_sramecc__xnack-"),
                                       ("../x", ".._x"), ("", "unknown")])
def test_safe_arch(arch, safe):
    assert safe_arch(arch) == safe
