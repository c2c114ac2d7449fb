"""Bad inputs: each breaks one rule, and fake and real mode raise the same error text."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

from hipbmm_inductor import HipbmmInputError
from hipbmm_inductor.ops.validate import check_inputs, is_valid_fast

from tests.support.inputs import FP8, make_case

OP = torch.ops.hipbmm.hipb_mm_fp8.default
E4 = torch.float8_e4m3fn


def _other_fp8(d):
    return FP8[1] if d == FP8[0] else FP8[0]


def _strided_B(N, K, dtype):
    return torch.zeros(N, K, dtype=torch.uint8).view(dtype).t()


# name -> (mutation of (args, case), expected message fragment)
MUTATIONS = {
    "A_dtype": (lambda a, c: (a[0].to(torch.bfloat16), *a[1:]), "A: dtype must be one of"),
    "B_flavour": (lambda a, c: (a[0], a[1].view(_other_fp8(a[1].dtype)), *a[2:]), "B: dtype must equal A's fp8 flavour"),
    "A_rank": (lambda a, c: (a[0].unsqueeze(0), *a[1:]), "A: expected 2 dims [M, K]"),
    "B_rank": (lambda a, c: (a[0], a[1].unsqueeze(0), *a[2:]), "B: expected 2 dims [K, N]"),
    "K_mismatch": (lambda a, c: (torch.cat([a[0].view(torch.uint8)] * 2, 1).view(a[0].dtype), *a[1:]),
                   "B: dim 0 (K) must equal A's dim 1"),
    "N_not_16": (lambda a, c: (a[0], _strided_B(24, a[0].shape[1], a[0].dtype), a[2], a[3][:, :24].contiguous(), None, a[5]),
                 "B: N must be >= 16 and a multiple of 16, got N=24"),
    "K_not_32": (lambda a, c: (a[0].view(torch.uint8)[:, :48].contiguous().view(a[0].dtype),
                               _strided_B(a[1].shape[1], 48, a[0].dtype), *a[2:]),
                 "B: K must be >= 32 and a multiple of 32 (the preshuffle tile), got K=48"),
    "B_contiguous": (lambda a, c: (a[0], a[1].contiguous(), *a[2:]), "B: must be the [K, N] transposed view"),
    "A_not_row_major": (lambda a, c: (a[0].view(torch.uint8).t().contiguous().t().view(a[0].dtype), *a[1:]),
                        "A: must be row-major [M, K]"),
    "scale_a_1d": (lambda a, c: (a[0], a[1], a[2].reshape(-1), *a[3:]), "scale_a: expected per-token scales of shape [M, 1]"),
    "scale_a_per_tensor": (lambda a, c: (a[0], a[1], a[2][:1, 0], *a[3:]), "scale_a: expected per-token scales"),
    "scale_a_wrong_m": (lambda a, c: (a[0], a[1], torch.cat([a[2], a[2]]), *a[3:]), "scale_a: dim 0 must equal M="),
    "scale_a_dtype": (lambda a, c: (a[0], a[1], a[2].half(), *a[3:]), "scale_a: dtype must be torch.float32"),
    "scale_a_strided": (lambda a, c: (a[0], a[1], torch.cat([a[2], a[2]], 1)[:, :1], *a[3:]),
                        "scale_a: must have unit stride along M"),
    "scale_b_column": (lambda a, c: (a[0], a[1], a[2], a[3].t(), *a[4:]), "scale_b: expected per-channel scales of shape [1, N]"),
    "scale_b_1d": (lambda a, c: (a[0], a[1], a[2], a[3].reshape(-1), *a[4:]), "scale_b: expected per-channel scales"),
    "scale_b_dtype": (lambda a, c: (a[0], a[1], a[2], a[3].double(), *a[4:]), "scale_b: dtype must be torch.float32"),
    "scale_b_strided": (lambda a, c: (a[0], a[1], a[2], torch.cat([a[3], a[3]]).t().contiguous().t()[:1], *a[4:]),
                        "scale_b: must have unit stride along N"),
    "bias_shape": (lambda a, c: (*a[:4], torch.zeros(a[1].shape[1] + 16, dtype=torch.bfloat16), a[5]), "bias: expected shape [N]"),
    "bias_dtype": (lambda a, c: (*a[:4], torch.zeros(a[1].shape[1], dtype=torch.float16), a[5]), "bias: dtype must be one of"),
    "bias_strided": (lambda a, c: (*a[:4], torch.zeros(2 * a[1].shape[1], dtype=torch.bfloat16)[::2], a[5]), "bias: must be contiguous"),
    "out_fp16": (lambda a, c: (*a[:5], torch.float16), "out_dtype: must be one of torch.bfloat16"),
    "out_fp32": (lambda a, c: (*a[:5], torch.float32), "out_dtype: must be one of torch.bfloat16"),
    "device": (lambda a, c: (a[0], a[1], a[2], a[3].to("meta"), *a[4:]), "scale_b: every tensor must be on one device"),
}


def _raise_text(fn):
    try:
        fn()
    except HipbmmInputError as e:
        return str(e)
    raise AssertionError("expected HipbmmInputError, nothing was raised")


def _fake_args(mode, args):
    return [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]


# One broken rule (by name) on an otherwise valid case of any shape and flavour.
_MUTATED_CASES = dict(
    name=st.sampled_from(sorted(MUTATIONS)),
    M=st.integers(1, 300),
    N=st.integers(2, 6).map(lambda x: 16 * x),
    K=st.integers(2, 4).map(lambda x: 32 * x),
    fp8=st.sampled_from(FP8),
)


@given(**_MUTATED_CASES)
def test_fake_and_real_raise_the_same(name, M, N, K, fp8):
    mutate, fragment = MUTATIONS[name]
    case = make_case(M, N, K, fp8, torch.bfloat16)
    args = mutate(case.args, case)
    real = _raise_text(lambda: OP(*args))
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fake_args = _fake_args(mode, args)
        fake = _raise_text(lambda: OP(*fake_args))
    assert fragment in real, (name, real)
    assert fake == real


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_rule_names_argument_and_value(name):
    mutate, fragment = MUTATIONS[name]
    case = make_case(5, 32, 64, E4, torch.bfloat16)
    text = _raise_text(lambda: OP(*mutate(case.args, case)))
    arg = fragment.split(":")[0]
    assert text.startswith(arg + ":"), text
    assert fragment in text


@pytest.mark.parametrize("pos,arg", [(0, "A"), (1, "B"), (2, "scale_a"), (3, "scale_b"), (4, "bias")])
def test_non_tensor_arguments(pos, arg):
    case = make_case(5, 32, 64)
    args = list(case.args)
    args[pos] = [1.0, 2.0]
    with pytest.raises(HipbmmInputError, match=f"^{arg}: expected a torch.Tensor, got list"):
        check_inputs(*args)


@pytest.mark.parametrize("fake", [False, True])
def test_empty_k_is_rejected(fake):
    """K = 0 passes every divisibility rule but leaves kernels nothing to reduce over."""
    case = make_case(5, 32, 64)
    A = case.A[:, :0]
    B = torch.zeros(32, 0, dtype=torch.uint8).view(case.A.dtype).t()
    args = (A, B, case.scale_a, case.scale_b, None, torch.bfloat16)
    assert not is_valid_fast(*args)
    if fake:
        with FakeTensorMode() as mode:
            text = _raise_text(lambda: OP(*_fake_args(mode, args)))
    else:
        text = _raise_text(lambda: OP(*args))
    assert text.startswith("B: K must be >= 32 and a multiple of 32"), text


def test_valid_case_passes():
    case = make_case(5, 32, 64)
    check_inputs(*case.args)


@given(**_MUTATED_CASES, bias=st.sampled_from([None, torch.bfloat16, torch.float32]))
def test_fast_path_agrees_with_check_inputs(name, M, N, K, fp8, bias):
    """The real op's per-call fast check never accepts what check_inputs rejects, and accepts
    every valid call (else the fast path would be a slow path)."""
    case = make_case(M, N, K, fp8, bias)
    assert is_valid_fast(*case.args)
    args = MUTATIONS[name][0](make_case(M, N, K, fp8, torch.bfloat16).args, case)
    assert not is_valid_fast(*args)
