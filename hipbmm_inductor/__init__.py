"""hipbmm-inductor: FP8 linear layers on AMD's hipBLASLt preshuffled GEMM under ``torch.compile``.

Public API
----------
``hipb_mm_fp8(A, B, scale_a, scale_b, bias=None, out_dtype=torch.bfloat16)``
    FP8 GEMM, per-token x per-channel scales, bf16 out; also ``torch.ops.hipbmm.hipb_mm_fp8``.
``prepack_weight(w)``
    ``[N, K]`` checkpoint weight -> the ``B`` argument (transposed view of the shuffled weight).
``shuffle_weight(w)`` / ``unshuffle_weight(w)``
    aiter's (16, 16) layout, 1- and 2-byte dtypes, leading batch dims allowed; also
    ``torch.ops.hipbmm.shuffle_weight`` / ``unshuffle_weight`` (functional, constant-foldable).
``set_backend(name)``
    ``"auto"``, ``"reference"``, ``"triton"``, ``"aiter"`` or ``None`` (back to ``HIPBMM_BACKEND``).
``status(device=None)``
    Platform, chosen backend, and each backend's usability with the reason.
``enable()`` / ``disable()``
    Turn the Inductor rewrite on or off (``HIPBMM_LOWERING``).
``HipbmmInputError``, ``BackendUnavailableError``
    What bad arguments and unusable backends raise.

Every environment variable is documented in :mod:`hipbmm_inductor.envs`.
"""

from __future__ import annotations

import logging
from pathlib import Path as _Path

# Set before the submodule imports below: status, tuning.key and the lowering's cache key import
# it at their top.
__version__ = "0.1.0"

# NOTE: in a source checkout `ops/` and `lowering/` sit beside this package (the design card's
# layout); installs map them inside it (pyproject's package-dir). Editable installs made by older
# setuptools, and a checkout on PYTHONPATH, do not: `hipbmm_inductor.ops` then failed to import on
# the GPU image (setuptools there, `pip install -e . --no-build-isolation`). Searching the
# checkout's root as part of this package makes both import the same modules an install would.
_root = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).parent / "ops").is_dir() and (_root / "ops" / "hipb_mm_fp8.py").is_file():
    __path__.append(str(_root))  # noqa: F821  (a package's __path__)

logging.getLogger("hipbmm_inductor").addHandler(logging.NullHandler())

from . import envs  # noqa: E402
from .ops import (  # noqa: E402
    BackendUnavailableError,
    HipbmmInputError,
    hipb_mm_fp8,
    prepack_weight,
    shuffle_weight,
    unshuffle_weight,
)
from .ops.registry import set_backend  # noqa: E402
from .lowering import disable, enable, is_enabled  # noqa: E402
from .lowering.hook import install_when_inductor_loads as _install_when_inductor_loads  # noqa: E402

# Turns the lowering on for every later torch.compile, without importing Inductor now.
_install_when_inductor_loads()
from .status import status  # noqa: E402

__all__ = [
    "__version__",
    "envs",
    "hipb_mm_fp8",
    "prepack_weight",
    "shuffle_weight",
    "unshuffle_weight",
    "set_backend",
    "status",
    "enable",
    "disable",
    "is_enabled",
    "HipbmmInputError",
    "BackendUnavailableError",
]
