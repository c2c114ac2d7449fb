"""The recording stand-in models aiter faithfully; without that the other tests here prove nothing.

Against the recording stand-in for ``aiter`` (:mod:`tests.support.aiter_standin`); see conftest.py.
"""

from __future__ import annotations

import pytest
import torch

from tests.support.aiter_shared import check_close, direct, gemms
from tests.support.aiter_standin import WORKSPACE_BYTES, ContractViolation
from tests.support.inputs import make_case


# --- the stand-in models aiter faithfully (else the tests below prove nothing) -----------------

def test_stand_in_rejects_a_broken_call(platform):
    # The stand-in must be able to fail: a contiguous copy of B destroys the preshuffled layout.
    standin = platform("gfx942")
    case = make_case(4, 32, 64, fp8=torch.float8_e4m3fnuz)
    standin.hipb_create_extension()
    with pytest.raises(ContractViolation, match="mat2 must be the \\[K, N\\] view"):
        standin.hipb_mm(case.A, case.B.contiguous(), -1, out_dtype=torch.bfloat16,
                        scaleA=case.scale_a, scaleB=case.scale_b, bpreshuffle=True)
    with pytest.raises(ContractViolation, match="bpreshuffle must be True"):
        standin.hipb_mm(case.A, case.B, -1, out_dtype=torch.bfloat16, scaleA=case.scale_a, scaleB=case.scale_b)


def test_stand_in_exits_on_an_unknown_index_and_stays_dead(platform):
    standin = platform("gfx942", solutions=(3, 7))
    case = make_case(8, 32, 64, fp8=torch.float8_e4m3fnuz)
    standin.hipb_create_extension()
    check_close(direct(standin, case, 7), case)  # a listed index runs
    with pytest.raises(SystemExit):
        direct(standin, case, 5)
    # A caller that swallowed the exit gets nothing more out of the "process".
    with pytest.raises(ContractViolation, match="exited at an earlier call"):
        direct(standin, case, -1)


def test_stand_in_solutions_can_depend_on_m(platform):
    standin = platform("gfx942", solutions=lambda M, N, K: (3, 7) if M <= 16 else (3,))
    standin.hipb_create_extension()
    direct(standin, make_case(16, 32, 64, fp8=torch.float8_e4m3fnuz), 7)
    with pytest.raises(SystemExit):
        direct(standin, make_case(17, 32, 64, fp8=torch.float8_e4m3fnuz), 7)


def test_stand_in_recreates_the_extension_on_every_call(platform):
    standin = platform("gfx942")
    for _ in range(3):
        standin.hipb_create_extension()
    assert standin.extension_creations == 3
    assert [e.handle for e in standin.extensions] == [1, 2, 3]
    assert standin.workspace_bytes == 3 * WORKSPACE_BYTES == 3 * 256 * 2**20


@pytest.mark.parametrize("value, on", [("1", True), ("true", True), ("TRUE", False), ("yes", False), ("0", False)])
def test_stand_in_online_tuning_replaces_the_index_up_to_512(platform, monkeypatch, value, on):
    # aiter: strcmp(getenv("HIP_ONLINE_TUNING"), "1" / "true"), then for n (our M) <= 512 the
    # caller's index is replaced by the CSV's, or tuned inline when the CSV has none.
    standin = platform("gfx942", solutions=(3, 7, 11))
    standin.hipb_create_extension()
    monkeypatch.setenv("HIP_ONLINE_TUNING", value)
    small, large = make_case(512, 16, 32, fp8=torch.float8_e4m3fnuz), make_case(513, 16, 32, fp8=torch.float8_e4m3fnuz)
    direct(standin, small, 3)
    direct(standin, large, 3)
    used_small, used_large = (c.used_index for c in gemms(standin))
    assert used_large == 3  # above 512 the caller's index always runs
    if on:
        assert used_small == 11 and standin.online_tunings == [(512, 16, 32)]  # tuned inline, 3 discarded
        direct(standin, small, 7)
        assert gemms(standin)[-1].used_index == 11  # from its CSV now, 7 discarded
    else:
        assert used_small == 3 and standin.online_tunings == []


def test_stand_in_online_tuning_off_without_free_memory(platform, monkeypatch):
    standin = platform("gfx942", free_bytes=128 * 2**20)  # aiter tunes only with more than 128 MiB free
    standin.hipb_create_extension()
    monkeypatch.setenv("HIP_ONLINE_TUNING", "1")
    direct(standin, make_case(8, 16, 32, fp8=torch.float8_e4m3fnuz), 7)
    assert gemms(standin)[0].used_index == 7
