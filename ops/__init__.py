"""hipbmm_inductor.ops: the ``hipb_mm_fp8`` op, the preshuffled layout, and the backends.

Importing this package registers ``torch.ops.hipbmm.{hipb_mm_fp8, shuffle_weight,
unshuffle_weight}`` and the reference backend; the Triton and aiter backends load on first use.
"""

from .errors import BackendUnavailableError, HipbmmInputError
from .layout import prepack_weight, shuffle_weight, unshuffle_weight
from .hipb_mm_fp8 import hipb_mm_fp8
from .validate import BIAS_DTYPES, FP8_DTYPES, OUT_DTYPES, check_inputs, check_shape_supported
from . import reference  # noqa: F401  registers the reference backend

__all__ = [
    "BackendUnavailableError",
    "HipbmmInputError",
    "hipb_mm_fp8",
    "shuffle_weight",
    "unshuffle_weight",
    "prepack_weight",
    "check_inputs",
    "check_shape_supported",
    "FP8_DTYPES",
    "OUT_DTYPES",
    "BIAS_DTYPES",
]
