"""The (16, 16) preshuffle layout: the layout's index formula, round trips, fake mode, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

import hipbmm_inductor as hi
from hipbmm_inductor import HipbmmInputError
from hipbmm_inductor.ops.reference import unshuffle_by_formula

ONE_BYTE = [torch.uint8, torch.int8, torch.float8_e4m3fn, torch.float8_e4m3fnuz]
TWO_BYTE = [torch.bfloat16, torch.float16, torch.int16]


def _random(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    if dtype.itemsize == 1:
        return raw.view(dtype)
    raw2 = torch.randint(-30000, 30000, shape, generator=g, dtype=torch.int16)
    return raw2.view(dtype)


def _spec_position(n: int, k: int, K: int, itemsize: int) -> int:
    """docs/contract.md, "The weight layout", generalised to element size e: tiles of 16 x 32, k split in chunks of 16/e."""
    kp = 16 // itemsize
    return ((((n // 16) * (K // 32) + k // 32) * (32 // kp) + (k % 32) // kp) * 16 + n % 16) * kp + k % kp


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.element_size() == 1 else t.view(torch.int16)


shapes = st.tuples(
    st.lists(st.integers(1, 3), max_size=2),  # batch dims
    st.integers(1, 6).map(lambda x: 16 * x),  # N
    st.integers(1, 5).map(lambda x: 32 * x),  # K
)


@given(shape=shapes, dtype=st.sampled_from(ONE_BYTE + TWO_BYTE), seed=st.integers(0, 2**16))
def test_round_trip(shape, dtype, seed):
    batch, N, K = shape
    w = _random((*batch, N, K), dtype, seed)
    s = hi.shuffle_weight(w)
    assert s.shape == w.shape and s.dtype == w.dtype and s.is_contiguous()
    assert torch.equal(_bits(hi.unshuffle_weight(s)), _bits(w))


@given(N=st.integers(1, 6).map(lambda x: 16 * x), K=st.integers(1, 5).map(lambda x: 32 * x),
       dtype=st.sampled_from([torch.float8_e4m3fn, torch.bfloat16]), seed=st.integers(0, 2**16), data=st.data())
def test_spec_index_formula(N, K, dtype, seed, data):
    w = _random((N, K), dtype, seed)
    flat = _bits(hi.shuffle_weight(w)).reshape(-1)
    wb = _bits(w)
    for _ in range(16):
        n = data.draw(st.integers(0, N - 1))
        k = data.draw(st.integers(0, K - 1))
        assert flat[_spec_position(n, k, K, w.element_size())] == wb[n, k], (n, k)


def test_spec_formula_literal_fp8():
    """The literal fp8 formula from docs/contract.md, over every element of one multi-tile weight."""
    N, K = 48, 96
    w = _random((N, K), torch.float8_e4m3fn, 1)
    flat = hi.shuffle_weight(w).view(torch.uint8).reshape(-1)
    for n in range(N):
        for k in range(K):
            pos = ((((n // 16) * (K // 32) + k // 32) * 2 + (k % 32) // 16) * 16 + n % 16) * 16 + k % 16
            assert flat[pos] == w.view(torch.uint8)[n, k]


def test_reference_unshuffle_agrees():
    w = _random((64, 128), torch.float8_e4m3fnuz, 3)
    assert torch.equal(_bits(unshuffle_by_formula(hi.shuffle_weight(w))), _bits(w))


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.bfloat16])
def test_prepack_is_transposed_view(dtype):
    w = _random((32, 64), dtype)
    B = hi.prepack_weight(w)
    assert B.shape == (64, 32) and B.stride() == (1, 64)
    assert torch.equal(_bits(B.t()), _bits(hi.shuffle_weight(w)))


def test_non_contiguous_input_is_read_correctly():
    big = _random((64, 64), torch.uint8)
    w = big[:, :32]  # strided view
    assert not w.is_contiguous()
    assert torch.equal(hi.unshuffle_weight(hi.shuffle_weight(w)), w)


@pytest.mark.parametrize("fn", [hi.shuffle_weight, hi.unshuffle_weight])
def test_fake_mode_matches_real(fn):
    w = _random((2, 32, 64), torch.float8_e4m3fn)
    real = fn(w)
    with FakeTensorMode() as mode:
        fake = fn(mode.from_tensor(w))
    assert (fake.shape, fake.stride(), fake.dtype) == (real.shape, real.stride(), real.dtype)


@pytest.mark.parametrize(
    "shape,dtype,match",
    [
        ((24, 64), torch.uint8, r"N \(dim -2\) must be a multiple of 16, got N=24"),
        ((32, 48), torch.uint8, r"K \(dim -1\) must be a multiple of 32, got K=48"),
        ((32, 64), torch.float32, r"1- and 2-byte element types, got torch.float32"),
        ((64,), torch.uint8, r"at least 2 dims"),
    ],
)
@pytest.mark.parametrize("fake", [False, True])
def test_bad_input(shape, dtype, match, fake):
    w = torch.zeros(shape, dtype=dtype)
    if fake:
        with FakeTensorMode() as mode, pytest.raises(HipbmmInputError, match=match):
            hi.shuffle_weight(mode.from_tensor(w))
    else:
        with pytest.raises(HipbmmInputError, match=match):
            hi.shuffle_weight(w)


def test_prepack_rejects_batched():
    with pytest.raises(HipbmmInputError, match=r"w: expected a 2-D \[N, K\] weight"):
        hi.prepack_weight(torch.zeros(2, 32, 64, dtype=torch.uint8))


@pytest.mark.parametrize("op", ["shuffle_weight", "unshuffle_weight"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.bfloat16])
def test_opcheck(op, dtype):
    # Real values, not random bit patterns: opcheck compares outputs with allclose, and random
    # 16-bit patterns include NaNs.
    w = torch.randn(2, 32, 64).to(dtype) if dtype.is_floating_point else _random((2, 32, 64), dtype)
    torch.library.opcheck(getattr(torch.ops.hipbmm, op).default, (w,))
