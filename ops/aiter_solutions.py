"""Which hipBLASLt solution index the aiter backend passes to ``aiter.hipb_mm``.

hipBLASLt ends the process (``exit()``) on an index it does not know or cannot run at the call's
problem, and aiter passes the caller's index through unchecked (docs/contract.md, "aiter
hipb_mm"). So the backend passes -1 (hipBLASLt's own heuristic) unless all of these hold:

- aiter's own online tuning does not replace the index (``HIP_ONLINE_TUNING`` on, M <= 512);
- the running hipBLASLt's version is known (an index is valid only for the build that listed it)
  and aiter's ``hipb_findallsols`` takes ``bpreshuffle`` (else its indices are for another layout);
- the tuner (:func:`hipbmm_inductor.tuning.choose`, candidates from ``hipb_findallsols``) chose
  an index, and the cache entry holding it is well formed;
- ``hipb_findallsols`` lists that index at the call's exact M.

Each refusal is logged once. :class:`Solutions` holds what ``hipb_findallsols`` answered, per
shape class and M; one per backend object.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Optional

from hipbmm_inductor import tuning
from hipbmm_inductor.tuning import measure

__all__ = ["Solutions", "HEURISTIC", "ONLINE_TUNING_MAX_M"]

# What the tuner answers when it has nothing better: hipBLASLt's own heuristic. Shared and
# read-only (the tuner hands cached dicts out as is).
HEURISTIC = {"solution_index": -1}

# aiter's hipb_mm tunes inline, replacing the caller's solution_index, only for hipBLASLt's n (our
# M) up to this (hipbsolgemm.cu: decode_max_n).
ONLINE_TUNING_MAX_M = 512


class Solutions:
    """The solution-index policy of one aiter backend (see the module docstring).

    ``warn_once(key, message, *args)`` logs a message once per key; ``counters`` is the backend's
    user-readable counter, which gets ``rejected_solution_indices``.
    """

    def __init__(self, warn_once: Callable[..., None], counters: Counter) -> None:
        self._warn_once = warn_once
        self.counters = counters
        # (N, K, A dtype, bias dtype, device key, M) -> the indices hipb_findallsols listed
        # (None: it cannot be asked)
        self._listed: dict[tuple, Optional[frozenset]] = {}

    def clear(self) -> None:
        """Forget every listing (another aiter module answers now)."""
        self._listed.clear()

    def tuned_config(self, aiter, args, device_key, *, vendor_tunes: bool, hipblaslt_known: bool,
                     run: Callable) -> tuple[dict, bool]:
        """The tuner's config for these arguments (``args``: the op's, bias already cast), and
        whether it is final for the plan (not an answer given while online tuning had to wait)."""
        if vendor_tunes:
            self._warn_once(("vendor",), (
                "aiter: HIP_ONLINE_TUNING is on, so aiter replaces the solution index of every GEMM "
                "with M <= %d by its own (./hip_online_tuning_res.csv, or tuned inline); hipbmm_inductor "
                "passes -1 there and neither tunes nor uses its cached hipBLASLt indices for those shapes"
            ), ONLINE_TUNING_MAX_M)
            return HEURISTIC, True
        if not hipblaslt_known:
            self._warn_once(("version",), (
                "aiter: hipBLASLt's version is unknown (no libhipblaslt.so.<version> in torch/lib or "
                "/opt/rocm/lib), and a solution index is valid only for the hipBLASLt build that listed "
                "it: hipBLASLt's heuristic (-1) runs and no index is tuned"
            ))
            return HEURISTIC, True
        if getattr(aiter, "hipb_findallsols", None) is None:
            return HEURISTIC, True  # nothing to tune from, nothing to check an index against
        # The one tuner call of the aiter backend.
        config = tuning.choose(
            "aiter", *args,
            default=HEURISTIC,
            candidates=lambda: [{"solution_index": s} for s in sorted(self.listing(aiter, args, device_key) or ())],
            run=run,
        )
        # online mode answers the heuristic without tuning while a CUDA graph is captured: ask again
        # on the next call instead of keeping that answer.
        final = not (config is HEURISTIC and tuning.get_mode() == "online" and
                     measure.unsafe_to_benchmark(args[0]) is not None)
        return config, final

    def index_of(self, config, N: int, K: int, M: int) -> int:
        """The tuned index a config holds; -1 for a corrupt cache entry (warned once)."""
        index = config.get("solution_index") if isinstance(config, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or index < -1:
            # The tuning cache is JSON: a float, string or missing index is a corrupt entry, not a choice.
            self._warn_once(("corrupt", N, K, repr(config)), (
                "aiter: ignoring the tuned config %r for N=%d, K=%d, M=%d: solution_index must be an int "
                ">= -1; hipBLASLt's heuristic (-1) runs"
            ), config, N, K, M)
            return -1
        return index

    def index_at(self, aiter, tuned_index: int, args, device_key) -> int:
        """``tuned_index`` if ``hipb_findallsols`` lists it at this call's exact M, else -1.

        NOTE: per M, not per bucket: matmulIsAlgoSupported (what hipb_findallsols filters by)
        sees the whole problem, and an index hipBLASLt cannot run at this M ends the process.
        """
        listed = self.listing(aiter, args, device_key)
        if listed is not None and tuned_index in listed:
            return tuned_index
        self.counters["rejected_solution_indices"] += 1
        A, B = args[0], args[1]
        N, K = B.shape[1], B.shape[0]
        self._warn_once(("unlisted", N, K, tuned_index), (
            "aiter: the tuned hipBLASLt solution %d for N=%d, K=%d is not one hipb_findallsols lists "
            "at M=%d for this hipBLASLt; passing it would end the process, so hipBLASLt's heuristic "
            "(-1) runs there (re-tune with `python -m hipbmm_inductor tune --force`)"
        ), tuned_index, N, K, A.shape[0])
        return -1

    def listing(self, aiter, args, device_key) -> Optional[frozenset]:
        """What ``hipb_findallsols`` lists for these arguments (memoised per shape class and M);
        ``None`` when this aiter cannot be asked for the preshuffled layout."""
        A, B, scale_a, scale_b, bias, out_dtype = args
        key = (B.shape[1], B.shape[0], A.dtype, None if bias is None else bias.dtype, device_key, A.shape[0])
        if key in self._listed:
            return self._listed[key]
        findallsols = getattr(aiter, "hipb_findallsols", None)
        listed = None
        if findallsols is not None:
            try:
                listed = frozenset(int(s) for s in findallsols(
                    A, B, bias=bias, out_dtype=out_dtype, scaleA=scale_a, scaleB=scale_b, bpreshuffle=True
                ))
            except TypeError:
                # NOTE: aiter releases before bpreshuffle support take no bpreshuffle argument here;
                # the solutions they list are for the plain layout and would compute garbage on ours.
                self._warn_once(("findallsols",), (
                    "aiter.hipb_findallsols has no bpreshuffle argument: hipBLASLt solutions are not tuned"
                ))
        self._listed[key] = listed
        return listed
