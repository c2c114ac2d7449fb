"""How Inductor emits a ``hipb_mm_fp8`` node: a direct call into the backend, writing into a buffer
Inductor allocated, instead of an opaque op call.

Left to itself, Inductor emits an opaque custom op as ``buf = torch.ops.hipbmm.hipb_mm_fp8.default(...)``
followed by ``assert_size_stride`` and ``assert_alignment`` on the result. Every run of the graph
then pays, per linear, for the dispatcher's way into a Python kernel, the op's argument check, an
output allocation inside the op and the two asserts, on top of the launch (the dispatch and the
check alone: 4.4 us on the CI machine, ``benchmarks/results/cpu/op_overhead.json``; the block this
lowering serves: ``benchmarks/results/h200/block_triton.json``; docs/triton.md, "The host path:
launch plans").
None of that checks anything a compiled graph has not already fixed: the op's fake
implementation ran the full check on these shapes, dtypes and strides when the graph was traced,
and the strides are pinned below.

So on a Python-wrapper graph whose device's backend can write into a given output
(``writes_out``: the Triton backend) the node becomes an ``ExternKernelOut``::

    buf4 = empty_strided_cuda((16, 6144), (6144, 1), torch.bfloat16)
    hipb_mm_fp8_out(buf2, _frozen_param4, buf3, _frozen_param5, None, out=buf4)

:func:`hipbmm_inductor.ops.hipb_mm_fp8.hipb_mm_fp8_out` is the launch plan's lookup and launch.
The generated module imports it itself, so a graph loaded from Inductor's FX cache in a fresh
process runs the same code. Everything else keeps Inductor's own fallback (the opaque op call): the
C++ wrapper and AOTInductor, which cannot call Python; ROCm, whose aiter ``hipb_mm`` returns its
own output (copying it into Inductor's buffer would cost more than it saves); the CPU.
"""

from __future__ import annotations

import functools
import logging
from typing import Optional

import torch
from torch._inductor import ir
from torch._inductor import lowering as inductor_lowering
from torch._inductor.lowering import fallback_handler, register_lowering
from torch._inductor.virtualized import V
from torch.fx.operator_schemas import normalize_function

from hipbmm_inductor import hardware
from hipbmm_inductor.ops import registry

__all__ = ["register", "EXTERN_NAME"]

log = logging.getLogger("hipbmm_inductor")

_OP = torch.ops.hipbmm.hipb_mm_fp8.default
EXTERN_NAME = "hipb_mm_fp8_out"
_IMPORT = f"from hipbmm_inductor.ops.hipb_mm_fp8 import {EXTERN_NAME}"
_TENSOR_ARGS = ("A", "B", "scale_a", "scale_b")


class HipbMmFp8Out(ir.ExternKernelOut):
    """The node's call, with the import its generated module needs."""

    def codegen(self, wrapper) -> None:
        wrapper.add_import_once(_IMPORT)
        super().codegen(wrapper)


def _direct_call(device: torch.device, out_dtype) -> bool:
    if V.graph.cpp_wrapper or getattr(V.graph, "aot_mode", False):
        return False
    if device is None or device.type != "cuda" or hardware.is_rocm() or out_dtype != torch.bfloat16:
        return False
    try:
        backend = registry.backend_for(device)
    except Exception:  # noqa: BLE001 - an unusable setting: the opaque op raises it at run time
        return False
    return bool(getattr(backend, "writes_out", False))


def _exact(x, val: torch.Tensor):
    """``x`` realised with exactly the strides the op was traced with (the pass built those)."""
    return ir.ExternKernel.require_exact_strides(ir.ExternKernel.realize_input(x), val.stride())


def _traced_values(node) -> Optional[dict]:
    """The node's arguments by schema name, as the fake values it was traced with (``None`` when
    they cannot all be read: the opaque call then serves it)."""
    if node is None or node.target is not _OP:
        return None
    normalized = normalize_function(node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True)
    if normalized is None:
        return None
    vals = {}
    for name, arg in normalized.kwargs.items():
        vals[name] = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else arg
    out = node.meta.get("val")
    if not isinstance(out, torch.Tensor) or any(not isinstance(vals.get(n), torch.Tensor) for n in _TENSOR_ARGS):
        return None
    if vals.get("bias") is not None and not isinstance(vals["bias"], torch.Tensor):
        return None
    vals["out"] = out
    return vals


def _lower(A, B, scale_a, scale_b, bias=None, out_dtype=torch.bfloat16):
    device = A.get_device()
    vals = _traced_values(V.graph.current_node)
    # The output dtype from the traced result: Inductor may hand the argument over as the schema's
    # ScalarType number (a node a model's own code created carries the default as 15, not a dtype).
    if vals is None or not _direct_call(device, vals["out"].dtype):
        return fallback_handler(_OP, add_to_fallback_set=False)(A, B, scale_a, scale_b, bias, out_dtype)
    inputs = [_exact(x, vals[n]) for x, n in zip((A, B, scale_a, scale_b), _TENSOR_ARGS)]
    if bias is not None:
        inputs.append(_exact(bias, vals["bias"]))
    M, N = A.get_size()[0], B.get_size()[1]
    layout = ir.FixedLayout(device, vals["out"].dtype, [M, N], [N, 1])
    out = HipbMmFp8Out(layout=layout, inputs=inputs, constant_args=(() if bias is not None else (None,)),
                       python_kernel_name=EXTERN_NAME)
    return ir.TensorBox.create(out)


@functools.cache
def register() -> None:
    """Make Inductor lower ``hipb_mm_fp8`` through :func:`_lower` (once per process)."""
    register_lowering(_OP, type_promotion_kind=None)(_lower)
    # Inductor reads its set of fallback ops to decide what is realised and what may fuse: the op
    # is neither, whichever way it lowers.
    inductor_lowering.fallbacks.add(_OP)
    log.debug("hipbmm lowering: hipb_mm_fp8 lowers to a direct call where the backend writes into Inductor's buffer")
