"""The Triton backend's launch configs (:mod:`hipbmm_inductor.ops.triton_configs`): every config the
heuristic or the tuner's space produces must be one the launchers accept. No kernel runs here."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hipbmm_inductor.ops import triton_configs as C

try:  # Gluon (triton.experimental.gluon): the sm_90 kernel's language; older Tritons lack it.
    from hipbmm_inductor.ops import triton_fp8_hopper as H
except ImportError:
    H = None
needs_gluon = pytest.mark.skipif(H is None, reason="this Triton has no triton.experimental.gluon")


# M drawn from decode sizes half the time: the rules differ most there.
dims = st.tuples(st.one_of(st.integers(1, 64), st.integers(1, 8192)), st.integers(1, 4096).map(lambda x: 16 * x),
                 st.integers(1, 1024).map(lambda x: 32 * x))


@given(dims, st.booleans(), st.booleans())
def test_heuristic_and_space_are_launchable(mnk, fast, hopper):
    M, N, K = mnk
    for cfg in [C.heuristic_config(M, N, K, fast, hopper), *C.config_space(M, N, K, fast, hopper)]:
        assert set(cfg) == set(C.CONFIG_KEYS)
        assert cfg["BLOCK_K"] % 32 == 0 and cfg["BLOCK_N"] % 16 == 0, cfg
        assert K % (cfg["BLOCK_K"] * cfg["SPLIT_K"]) == 0, (cfg, K)
        if cfg["HOPPER"]:
            # Only where asked for, only 64-row tiles for a decode batch (a 128-row tile doubles
            # the tensor work of a weight stream), and only shapes the Gluon kernel takes.
            assert hopper, (cfg, M, fast, hopper)
            assert M > 16 or cfg["BLOCK_M"] == 64, (cfg, M)
            if H is not None:
                H.check_config(cfg, K)
        json.dumps(cfg)  # the tuner stores configs as JSON


def test_heuristic_in_config_space_for_suite_shapes():
    # The tuner compares candidates with the default: the default must be one of them for the
    # production shapes, else tuning could only ever move away from it.
    for N, K in [(6144, 4096), (4096, 14336), (28672, 4096), (10240, 8192), (8192, 28672)]:
        for M in (1, 16, 64, 256, 1024, 4096):
            for fast in (False, True):
                for hopper in (False, True):
                    assert C.heuristic_config(M, N, K, fast, hopper) in C.config_space(M, N, K, fast, hopper), (
                        M, N, K, fast, hopper)
            # Promoted configs never ask for the swapped form (Triton cannot promote it).
            assert not any(c["SWAP_AB"] for c in C.config_space(M, N, K) + C.config_space(M, N, K, hopper=True))


@pytest.mark.parametrize("M,N,K", [(256, 4096, 4160), (256, 32, 4096), (100, 48, 96), (3000, 80, 2848)])
@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("hopper", [False, True])
def test_config_space_never_empty_and_holds_the_default(M, N, K, fast, hopper):
    """Odd K (not a multiple of 64 or 128) and narrow N fit few configs: the tuner must still get
    candidates, and the default among them."""
    space = C.config_space(M, N, K, fast, hopper)
    assert space and C.heuristic_config(M, N, K, fast, hopper) in space
    for cfg in space:
        assert K % (cfg["BLOCK_K"] * cfg["SPLIT_K"]) == 0, cfg
        if cfg["HOPPER"] and H is not None:
            H.check_config(cfg, K)


@needs_gluon
def test_hopper_check_config_names_the_rule():
    with pytest.raises(ValueError, match="shared memory"):
        # 4 x 256 x 256 bytes of operands + 2 x 64 x 128 x 2 of output staging > 225 KB
        H.check_config(C.make_hopper_config(128, 128, 256, 4), 4096)
    with pytest.raises(ValueError, match="K % BLOCK_K == 0"):
        H.check_config(C.make_hopper_config(128, 128, 256, 3), 4224)
    with pytest.raises(ValueError, match="BLOCK_N 256 with BLOCK_K 128 and BLOCK_M 128"):
        H.check_config(C.make_hopper_config(128, 256, 256, 2), 4096)
    with pytest.raises(ValueError, match="BLOCK_N 256 with BLOCK_K 128 and BLOCK_M 128"):
        H.check_config(C.make_hopper_config(64, 256, 128, 3), 4096)


@needs_gluon
def test_hopper_space_is_what_the_kernel_takes():
    """``fits`` (what the tuner may time) and the kernel's own check agree on every Gluon config:
    the output staging tiles count against shared memory in both."""
    for cfg in C.hopper_configs():
        try:
            H.check_config(cfg, 8192)
            accepted = True
        except ValueError:
            accepted = False
        assert C.fits(cfg, 8192, 8192) == accepted, cfg
        assert C.hopper_smem_bytes(cfg) > cfg["num_stages"] * (cfg["BLOCK_M"] + cfg["BLOCK_N"]) * cfg["BLOCK_K"]


def test_config_bucket_is_the_tuning_bucket_capped():
    assert [C.config_bucket(m) for m in (1, 2, 16, 17, 64, 65, 4096, 10000)] == [1, 2, 16, 32, 64, 128, 4096, 4096]
