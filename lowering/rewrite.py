"""The rewrite of one candidate into ``hipbmm.hipb_mm_fp8`` on a packed (transposed, shuffled)
frozen weight: all or nothing, one packed constant per weight.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.fx as fx
from torch._guards import detect_fake_mode
from torch.utils._pytree import tree_flatten, tree_map

from .gemm import Gemm, aten, constant, known, prims, val

__all__ = ["rewrite"]

log = logging.getLogger("hipbmm_inductor")


# --------------------------------------------------------------------------------- rewrite


def _call(graph: fx.Graph, created: list, target, *args) -> fx.Node:
    """Insert ``target(*args)`` with ``meta['val']`` computed on the inputs' fake values."""
    node = graph.call_function(target, args)
    created.append(node)
    vals = tree_map(lambda x: x.meta["val"] if isinstance(x, fx.Node) else x, args)
    fake_mode = detect_fake_mode([v for v in tree_flatten(vals)[0] if isinstance(v, torch.Tensor)])
    if fake_mode is None:
        node.meta["val"] = target(*vals)
    else:
        with fake_mode:
            node.meta["val"] = target(*vals)
    return node


def _scale_a(graph, created, s, factor):
    """Per-token scales as the op takes them: fp32 ``[M, 1]`` with unit stride along M."""
    if val(s).dtype != torch.float32:
        s = _call(graph, created, prims.convert_element_type.default, s, torch.float32)
    if factor is not None:  # [M, 1] * one element: a fresh contiguous [M, 1]
        return _call(graph, created, aten.mul.Tensor, s, factor)
    v = val(s)
    if not (known(v.stride(0) == 1) or known(v.shape[0] <= 1)):
        s = _call(graph, created, aten.clone.default, s)  # a strided [M, 1] column clones to contiguous
    return s


def _scale_b(graph, created, s, n, factor):
    """Per-channel scales as the op takes them: fp32 ``[1, N]`` with unit stride along N.

    Real code carries them as ``[N, 1]`` transposed (vLLM: ``weight_scale.t()``), as 1-D ``[N]``
    or as ``[1, N]``; on a frozen graph every node added here folds into the scale constant.
    """
    if val(s).dtype != torch.float32:
        s = _call(graph, created, prims.convert_element_type.default, s, torch.float32)
    v = val(s)
    if not (v.dim() == 2 and v.stride(1) == 1):
        if v.dim() == 2:
            s = _call(graph, created, aten.reshape.default, s, [n])
        if val(s).stride(0) != 1:
            s = _call(graph, created, aten.clone.default, s)
        s = _call(graph, created, aten.view.default, s, [1, n])
    if factor is not None:  # [1, N] * one element: a fresh contiguous [1, N]
        s = _call(graph, created, aten.mul.Tensor, s, factor)
    return s


# Packed weights already inserted into a graph, kept on the graph itself (a module-level map would
# keep every graph, and through it the frozen weights, alive): a weight shared by several
# candidates is packed once.
_PACKED_ATTR = "_hipbmm_packed_weights"


def _packed_cache(graph: fx.Graph) -> dict:
    cache = graph.__dict__.get(_PACKED_ATTR)
    if cache is None:
        cache = graph.__dict__[_PACKED_ATTR] = {}
    return cache


def _weight_key(gm: fx.GraphModule, b: fx.Node):
    """Identity of the constant behind ``b``: its storage and view, or the node where unknown."""
    t = constant(gm, b)
    if t is None:
        return ("node", b)
    return ("tensor", t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()),
            t.dtype, str(t.device))


def _packed_weight(graph: fx.Graph, gm, b: fx.Node, created: list) -> tuple[fx.Node, object]:
    """``permute(shuffle_weight(permute(b)))``, inserted right after ``b`` (before every use), or
    the one already inserted for the same constant."""
    key = _weight_key(gm, b)
    B = _packed_cache(graph).get(key)
    if B is not None and B.graph is graph and not getattr(B, "_erased", False):
        return B, None
    # b is the [K, N] view of the [N, K] checkpoint weight; every node of this chain has only
    # constant inputs, so the final constant_fold turns it into one pre-shuffled constant.
    with graph.inserting_after(b):
        w_nk = _call(graph, created, aten.permute.default, b, [1, 0])
    with graph.inserting_after(w_nk):
        packed = _call(graph, created, torch.ops.hipbmm.shuffle_weight.default, w_nk)
    with graph.inserting_after(packed):
        B = _call(graph, created, aten.permute.default, packed, [1, 0])
    return B, key


def rewrite(g: Gemm, graph: fx.Graph, gm: Optional[fx.GraphModule] = None) -> fx.Node:
    """Replace the candidate with ``hipb_mm_fp8(a, prepack(b), scale_a, scale_b, bias)``.

    All or nothing: if building the replacement fails, every node it inserted is removed again
    and the exception propagates with the graph as it was.
    """
    n = val(g.b).shape[1]
    created: list[fx.Node] = []
    try:
        B, new_key = _packed_weight(graph, gm, g.b, created)
        with graph.inserting_before(g.root):
            a = g.a
            if g.row_end is not None:
                a = _call(graph, created, aten.slice.Tensor, a, 0, 0, g.row_end)
            sa = _scale_a(graph, created, g.scale_a, g.tensor_scale_a)
            sb = _scale_b(graph, created, g.scale_b, n, g.tensor_scale_b)
            # Defaults left out (no bias, bf16 out): the dispatcher converts every argument it is
            # given, on every call of the compiled graph (0.7 us for the two defaults, benchmarks/results/cpu/op_overhead.json).
            args = (a, B, sa, sb) if g.bias is None else (a, B, sa, sb, g.bias)
            out = _call(graph, created, torch.ops.hipbmm.hipb_mm_fp8.default, *args)
    except BaseException:
        for node in reversed(created):
            if not node.users:
                graph.erase_node(node)
        raise
    if new_key is not None:
        _packed_cache(graph)[new_key] = B
    # NOTE: copy 'val' and 'stack_trace' only. Copying the whole meta carries eager_input_vals of
    # the old node and lowering fails with a bare AssertionError in GraphLowering.call_function.
    if "stack_trace" in g.root.meta:
        out.meta["stack_trace"] = g.root.meta["stack_trace"]
    g.root.replace_all_uses_with(out)
    for dead in g.dead:
        if not dead.users:
            graph.erase_node(dead)
    return out
