"""What the installed PyTorch can do, where it differs across the supported 2.11 .. 2.13."""

from __future__ import annotations

import torch

__all__ = ["TORCH_VERSION", "CPU_ROWWISE_SCALED_MM", "DYNAMO_TRACES_SCALED_MM_V2"]

TORCH_VERSION = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])

# aten._scaled_mm takes rowwise scales on the CPU only from 2.12; 2.11 raises "Now _scaled_mm only
# supports per-tensor scaling for CPU backend" (docs/contract.md, "PyTorch versions"; seen on the GPU image's 2.11).
CPU_ROWWISE_SCALED_MM = TORCH_VERSION >= (2, 12)

# NOTE: Dynamo in 2.11 cannot trace torch.nn.functional.scaled_mm ("does not know how to trace the
# builtin _scaled_mm_v2", a graph break; seen on the GPU image); 2.13 traces it. 2.12 is unverified,
# so it is treated as unable.
DYNAMO_TRACES_SCALED_MM_V2 = TORCH_VERSION >= (2, 13)
