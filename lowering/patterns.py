"""The pattern forms the freezing pass rewrites into ``hipbmm.hipb_mm_fp8``, and the rewrite.

Each form is three small pieces:

- a *pattern* that finds candidates (Inductor's pattern matcher indexes it by target);
- an *extractor* that reads a candidate into a :class:`Gemm` (operands, scales, bias, output
  dtype, and the nodes that die), or returns ``None`` where the region is not that form after all;
- the shared *checks* (:data:`CHECKS`, named functions, each returning ``None`` or the reason a
  candidate is skipped), then the shared :func:`rewrite`.

Forms (SPEC sections 4 and 5; graphs as they look once freezing has folded ``weight.t()``):

``scaled_mm``
    ``aten._scaled_mm(a, b, scale_a [M,1], scale_b [1,N], bias?, None, bf16, fast_accum?)``, any
    arity (4 to 8 positional arguments: trailing defaults are dropped, so one ``CallFunction``
    would match only one arity; ``CallFunctionVarArgs`` matches them all).
``scaled_mm_v2``
    ``aten._scaled_mm_v2(a, b, [scale_a], [RowWise], [], [scale_b], [RowWise], [], bias, bf16,
    ...)``: what ``torch.nn.functional.scaled_mm`` traces to (PyTorch 2.10+).
``channelwise``
    vLLM's fallback: ``_scaled_mm(a, b, 1, 1, out_dtype=fp32)``, optional row ``narrow``
    (``slice``), ``* scale_a * scale_b`` in any order, optional ``+ bias``, ``.to(bf16)``.
    Found from its final cast, walked upwards by :func:`extract_channelwise`.

The rewrite inserts ``permute(shuffle_weight(permute(b)))`` on the frozen weight. Every input of
that chain is a constant, so Inductor's final ``constant_fold`` (which runs after the freezing
patterns) replaces it with one pre-shuffled constant whose strides are ``(1, K)``; the
unshuffled constant loses its last user and is deleted.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.fx as fx

from hipbmm_inductor import envs
from hipbmm_inductor.ops import registry
from hipbmm_inductor.ops.errors import BackendUnavailableError
from hipbmm_inductor.ops.validate import BIAS_DTYPES, FP8_DTYPES, check_shape_supported

from .counters import record_rewrite, record_skip

__all__ = ["Gemm", "CHECKS", "FORMS", "Form", "rewrite", "explicit_backend"]

log = logging.getLogger("hipbmm_inductor")

aten = torch.ops.aten
prims = torch.ops.prims

ROWWISE = 1  # int(torch.nn.functional.ScalingType.RowWise); the graph stores the int
NO_SWIZZLE = 0  # int(torch.nn.functional.SwizzleType.NO_SWIZZLE)


@dataclass
class Gemm:
    """One candidate, read out of the graph."""

    form: str
    root: fx.Node  # its uses are redirected to the new op
    dead: list[fx.Node]  # erased after the rewrite, users before producers
    a: fx.Node
    b: fx.Node  # [K, N]
    scale_a: object
    scale_b: object
    bias: Optional[fx.Node]
    out_dtype: Optional[torch.dtype]
    row_end: object = None  # channelwise narrow(out, 0, 0, row_end), moved onto A by the rewrite
    # use_fast_accum is not recorded: hipb_mm_fp8 always accumulates in fp32 (at least as exact).

    @property
    def rows(self):
        """M as the scales see it: the narrowed row count, else A's."""
        return self.row_end if self.row_end is not None else _val(self.a).shape[0]


Extracted = Union[Gemm, str, None]  # a Gemm, a skip reason, or "not this form"


# ----------------------------------------------------------------------------------- helpers


def _val(x):
    return x.meta.get("val") if isinstance(x, fx.Node) else None


def _is_call(node, target) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target is target


def _bind(node: fx.Node) -> dict:
    """Every schema argument of an ATen call, positional or keyword, defaults filled in."""
    bound = {}
    for i, arg in enumerate(node.target._schema.arguments):
        if i < len(node.args):
            bound[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            bound[arg.name] = node.kwargs[arg.name]
        else:
            bound[arg.name] = arg.default_value if arg.has_default_value() else None
    return bound


def _known(cond) -> bool:
    """True only if ``cond`` holds for every value of the symbolic sizes (never guards)."""
    if isinstance(cond, bool):
        return cond
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    return statically_known_true(cond)


def _constant(gm: fx.GraphModule, node) -> Optional[torch.Tensor]:
    if isinstance(node, fx.Node) and node.op == "get_attr":
        obj = gm
        for part in node.target.split("."):
            obj = getattr(obj, part, None)
        return obj if isinstance(obj, torch.Tensor) else None
    return None


def _is_unit_scale(gm: fx.GraphModule, node) -> bool:
    """A one-element 1.0: vLLM's ``TORCH_DEVICE_IDENTITY`` (a constant) or ``full([1], 1)``."""
    if isinstance(node, (int, float)):
        return node == 1
    if _is_call(node, aten.full.default):
        return list(node.args[0]) in ([], [1], [1, 1]) and node.args[1] == 1
    t = _constant(gm, node)
    return t is not None and t.numel() == 1 and bool(t.float().item() == 1.0)


def explicit_backend() -> bool:
    """A backend chosen by name (env or ``set_backend``) opts the pass in on every device."""
    return envs.is_set("HIPBMM_BACKEND") and envs.HIPBMM_BACKEND != "auto"


# ------------------------------------------------------------------------------ extractors

# _scaled_mm nodes that belong to a channelwise candidate, already counted there: the rowwise
# form must not count them a second time (its pattern runs in a later pass over the same graph).
_claimed: "weakref.WeakSet[fx.Node]" = weakref.WeakSet()


def extract_scaled_mm(node: fx.Node, gm: fx.GraphModule) -> Extracted:
    if node in _claimed:
        return None
    args = _bind(node)
    out_dtype = args["out_dtype"] or getattr(_val(args["self"]), "dtype", None)
    if args["scale_result"] is not None:
        return "scale_result is set (only None is supported)"
    sa, sb = args["scale_a"], args["scale_b"]
    if out_dtype == torch.float32 and _is_unit_scale(gm, sa) and _is_unit_scale(gm, sb):
        return "unit scales with fp32 output, but not followed by the channelwise epilogue"
    return Gemm("scaled_mm", node, [node], args["self"], args["mat2"], sa, sb, args["bias"], out_dtype)


def extract_scaled_mm_v2(node: fx.Node, gm: fx.GraphModule) -> Extracted:
    args = _bind(node)
    recipes = (list(args["recipe_a"]), list(args["recipe_b"]))
    if recipes != ([ROWWISE], [ROWWISE]) or len(args["scale_a"]) != 1 or len(args["scale_b"]) != 1:
        return f"scale recipes {recipes} are not RowWise x RowWise (one scale tensor each)"
    if any(list(s) not in ([], [NO_SWIZZLE]) for s in (args["swizzle_a"], args["swizzle_b"])):
        return "swizzled scales"
    if list(args["contraction_dim"] or []) not in ([], [1, 0]):
        return f"contraction_dim {list(args['contraction_dim'])} is not the default"
    out_dtype = args["out_dtype"] or getattr(_val(args["self"]), "dtype", None)
    return Gemm("scaled_mm_v2", node, [node], args["self"], args["mat2"], args["scale_a"][0],
                args["scale_b"][0], args["bias"], out_dtype)


def _split_mul(node) -> Optional[tuple[fx.Node, object]]:
    """``mul(x, s)`` or ``mul(s, x)`` where ``x`` is itself a mul/slice/_scaled_mm: (x, s)."""
    if not _is_call(node, aten.mul.Tensor):
        return None
    p, q = node.args[:2]
    inner = (aten.mul.Tensor, aten.slice.Tensor, aten._scaled_mm.default)
    if isinstance(p, fx.Node) and p.op == "call_function" and p.target in inner:
        return p, q
    if isinstance(q, fx.Node) and q.op == "call_function" and q.target in inner:
        return q, p
    return None


def extract_channelwise(root: fx.Node, gm: fx.GraphModule) -> Extracted:
    """Walk ``.to(dtype) <- [+ bias] <- * s2 <- * s1 <- [narrow] <- _scaled_mm(unit scales)``."""
    x, out_dtype = root.args[0], root.args[1]
    chain = [root]
    bias = None
    if _is_call(x, aten.add.Tensor):
        add, (p, q) = x, x.args[:2]
        if _split_mul(p) is not None:
            x, bias = p, q
        elif _split_mul(q) is not None:
            x, bias = q, p
        else:
            return None
        chain.append(add)
    outer = _split_mul(x)
    if outer is None:
        return None
    inner_node, s2 = outer
    inner = _split_mul(inner_node)
    if inner is None:
        return None
    mm, s1 = inner
    chain += [x, inner_node]
    row_end = None
    if _is_call(mm, aten.slice.Tensor):
        sl = _bind(mm)  # narrow(out, 0, 0, rows) traces to slice(out, 0, 0, rows)
        if not (sl["dim"] == 0 and sl["start"] in (0, None) and sl["step"] == 1):
            return None
        chain.append(mm)
        mm, row_end = sl["self"], sl["end"]
    if not _is_call(mm, aten._scaled_mm.default):
        return None
    args = _bind(mm)
    if args["out_dtype"] != torch.float32 or not (
        _is_unit_scale(gm, args["scale_a"]) and _is_unit_scale(gm, args["scale_b"])
    ):
        return None  # an ordinary _scaled_mm followed by multiplies: the rowwise form's business
    chain.append(mm)
    _claimed.add(mm)  # from here on this GEMM is counted as a channelwise candidate
    chain = [n for n in chain if isinstance(n, fx.Node)]
    for n in chain[1:]:
        if len(n.users) != 1:
            return f"intermediate {n.target} result has other users ({len(n.users)})"
    if args["bias"] is not None or args["scale_result"] is not None:
        return "the fp32 _scaled_mm itself has a bias or scale_result"
    if bias is not None and not isinstance(bias, fx.Node):
        return "the bias is a Python scalar"
    # s1 and s2 are the two scales in either order: tell them apart by shape.
    n = _val(args["mat2"]).shape[1]
    sa, sb = (s2, s1) if _looks_per_channel(s1, n) and not _looks_per_channel(s2, n) else (s1, s2)
    return Gemm("channelwise", root, chain, args["self"], args["mat2"], sa, sb, bias, out_dtype, row_end=row_end)


def _looks_per_channel(s, n) -> bool:
    v = _val(s)
    if v is None:
        return False
    shape = list(v.shape)
    return (len(shape) == 1 and _known(shape[0] == n) and not _known(shape[0] == 1)) or (
        len(shape) == 2 and _known(shape[0] == 1) and _known(shape[1] == n) and not _known(shape[1] == 1)
    )


# ---------------------------------------------------------------------------------- checks
# Each check returns None (pass) or the reason the candidate is skipped. Order matters: the first
# reason is the one counted, so the cheap and most explanatory ones come first.


def lowering_enabled(g: Gemm, gm) -> Optional[str]:
    from . import is_enabled

    return None if is_enabled() else "lowering disabled (HIPBMM_LOWERING=0 or hipbmm_inductor.disable())"


def fp8_operands(g: Gemm, gm) -> Optional[str]:
    a, b = _val(g.a), _val(g.b)
    if a is None or b is None:
        return "operands have no fake value"
    if a.dtype not in FP8_DTYPES or b.dtype != a.dtype:
        return f"operand dtypes {a.dtype} x {b.dtype} (need one of {', '.join(map(str, FP8_DTYPES))}, equal)"
    if a.dim() != 2 or b.dim() != 2:
        return "operands are not 2-D"
    return None


def bf16_output(g: Gemm, gm) -> Optional[str]:
    if g.out_dtype != torch.bfloat16:
        return f"out_dtype {g.out_dtype} (hipBLASLt's rowwise FP8 path writes bf16 only)"
    return None


def frozen_weight(g: Gemm, gm) -> Optional[str]:
    if not (isinstance(g.b, fx.Node) and g.b.op == "get_attr"):
        return "weight is not a frozen constant (needs torch._inductor.config.freezing=True under no_grad)"
    return None


def supported_shape(g: Gemm, gm) -> Optional[str]:
    K, N = _val(g.b).shape
    if not (isinstance(K, int) and isinstance(N, int)):
        return "weight has symbolic sizes"
    why = check_shape_supported(N, K)
    return f"unsupported weight shape: {why}" if why else None


def row_major_a(g: Gemm, gm) -> Optional[str]:
    a = _val(g.a)
    if not (_known(a.stride(1) == 1) and (_known(a.stride(0) == a.shape[1]) or _known(a.shape[0] <= 1))):
        return "activation is not row-major [M, K]"
    return None


def rowwise_scales(g: Gemm, gm) -> Optional[str]:
    rows, n = g.rows, _val(g.b).shape[1]
    sa, sb = _val(g.scale_a), _val(g.scale_b)
    if sa is None or sb is None:
        return "a scale is a Python scalar (per-tensor)"
    if not (sa.is_floating_point() and sb.is_floating_point()):
        return "scales are not floating point"
    if not (sa.dim() == 2 and _known(sa.shape[0] == rows) and _known(sa.shape[1] == 1)):
        if _known(sa.numel() == 1):
            return "per-tensor scale_a (needs per-token [M, 1])"
        return f"scale_a shape {list(sa.shape)} is not per-token [M, 1]"
    if sb.dim() == 2 and _known(sb.shape[0] == 1) and _known(sb.shape[1] == n):
        pass
    elif sb.dim() == 1 and _known(sb.shape[0] == n):
        pass  # 1-D per-channel: the rewrite views it as [1, N]
    elif _known(sb.numel() == 1):
        return "per-tensor scale_b (needs per-channel [1, N])"
    else:
        return f"scale_b shape {list(sb.shape)} is not per-channel [1, N] or [N]"
    return None


def bias_ok(g: Gemm, gm) -> Optional[str]:
    if g.bias is None:
        return None
    v = _val(g.bias)
    n = _val(g.b).shape[1]
    if v is None or v.dim() != 1 or not _known(v.shape[0] == n):
        return f"bias shape {list(v.shape) if v is not None else '?'} is not [N]"
    if v.dtype not in BIAS_DTYPES:
        return f"bias dtype {v.dtype} (need one of bf16, fp32)"
    return None


def backend_allows(g: Gemm, gm) -> Optional[str]:
    device = _val(g.a).device
    try:
        backend = registry.backend_for(device)
    except BackendUnavailableError as e:
        return f"no backend can run on {device.type}: {e}"
    if explicit_backend():
        return None
    if not backend.is_fast(device):
        return (
            f"backend {backend.name!r} is not known to beat the vendor GEMM on {device.type} "
            f"(HIPBMM_BACKEND=auto; name a backend to opt in)"
        )
    return None


CHECKS: tuple[Callable[[Gemm, fx.GraphModule], Optional[str]], ...] = (
    lowering_enabled,
    fp8_operands,
    bf16_output,
    frozen_weight,
    row_major_a,
    rowwise_scales,
    bias_ok,
    supported_shape,
    backend_allows,
)


def classify(g: Extracted, gm) -> Extracted:
    if not isinstance(g, Gemm):
        return g
    for check in CHECKS:
        reason = check(g, gm)
        if reason is not None:
            return reason
    return g


# --------------------------------------------------------------------------------- rewrite


def _call(graph: fx.Graph, target, *args) -> fx.Node:
    """Insert ``target(*args)`` with ``meta['val']`` computed on the inputs' fake values."""
    from torch._guards import detect_fake_mode
    from torch.utils._pytree import tree_flatten, tree_map

    node = graph.call_function(target, args)
    vals = tree_map(lambda x: x.meta["val"] if isinstance(x, fx.Node) else x, args)
    fake_mode = detect_fake_mode([v for v in tree_flatten(vals)[0] if isinstance(v, torch.Tensor)])
    if fake_mode is None:
        node.meta["val"] = target(*vals)
    else:
        with fake_mode:
            node.meta["val"] = target(*vals)
    return node


def _scale_a(graph, s):
    """Per-token scales as the op takes them: fp32 ``[M, 1]`` with unit stride along M."""
    if _val(s).dtype != torch.float32:
        s = _call(graph, prims.convert_element_type.default, s, torch.float32)
    v = _val(s)
    if not (_known(v.stride(0) == 1) or _known(v.shape[0] <= 1)):
        s = _call(graph, aten.clone.default, s)  # a strided [M, 1] column clones to contiguous
    return s


def _scale_b(graph, s, n):
    """Per-channel scales as the op takes them: fp32 ``[1, N]`` with unit stride along N.

    Real code carries them as ``[N, 1]`` transposed (vLLM: ``weight_scale.t()``), as 1-D ``[N]``
    or as ``[1, N]``; on a frozen graph every node added here folds into the scale constant.
    """
    if _val(s).dtype != torch.float32:
        s = _call(graph, prims.convert_element_type.default, s, torch.float32)
    v = _val(s)
    if v.dim() == 2 and v.stride(1) == 1:
        return s
    if v.dim() == 2:
        s = _call(graph, aten.reshape.default, s, [n])
    if _val(s).stride(0) != 1:
        s = _call(graph, aten.clone.default, s)
    return _call(graph, aten.view.default, s, [1, n])


def rewrite(g: Gemm, graph: fx.Graph) -> fx.Node:
    """Replace the candidate with ``hipb_mm_fp8(a, prepack(b), scale_a, scale_b, bias)``."""
    n = _val(g.b).shape[1]
    with graph.inserting_before(g.root):
        # b is the [K, N] view of the [N, K] checkpoint weight; every node of this chain has only
        # constant inputs, so the final constant_fold turns it into one pre-shuffled constant.
        w_nk = _call(graph, aten.permute.default, g.b, [1, 0])
        packed = _call(graph, torch.ops.hipbmm.shuffle_weight.default, w_nk)
        B = _call(graph, aten.permute.default, packed, [1, 0])
        a = g.a
        if g.row_end is not None:
            a = _call(graph, aten.slice.Tensor, a, 0, 0, g.row_end)
        sa = _scale_a(graph, g.scale_a)
        sb = _scale_b(graph, g.scale_b, n)
        out = _call(graph, torch.ops.hipbmm.hipb_mm_fp8.default, a, B, sa, sb, g.bias, torch.bfloat16)
    # NOTE: copy 'val' and 'stack_trace' only. Copying the whole meta carries eager_input_vals of
    # the old node and lowering fails with a bare AssertionError (SPEC section 5).
    if "stack_trace" in g.root.meta:
        out.meta["stack_trace"] = g.root.meta["stack_trace"]
    g.root.replace_all_uses_with(out)
    for dead in g.dead:
        if not dead.users:
            graph.erase_node(dead)
    return out


# ----------------------------------------------------------------------------------- forms


@dataclass(frozen=True)
class Form:
    name: str
    target: object  # the op the pattern is indexed by
    extract: Callable[[fx.Node, fx.GraphModule], Extracted]
    pass_number: int  # channelwise first, so that its _scaled_mm is claimed before the rowwise pass

    def pattern(self):
        from torch._inductor.pattern_matcher import CallFunctionVarArgs

        return CallFunctionVarArgs(self.target)

    def extra_check(self, match) -> bool:
        """Count the candidate and decide; the handler below then only rewrites."""
        node = match.output_node()
        gm = match.graph.owning_module
        g = classify(self.extract(node, gm), gm)
        if g is None:
            return False
        if isinstance(g, str):
            record_skip(self.name, g)
            log.debug("hipbmm lowering: skipped %s at %s: %s", self.name, node.name, g)
            return False
        return True

    def handler(self, match, *args, **kwargs) -> None:
        node = match.output_node()
        gm = match.graph.owning_module
        g = classify(self.extract(node, gm), gm)
        assert isinstance(g, Gemm), g  # extra_check accepted this very node a moment ago
        out = rewrite(g, match.graph)
        record_rewrite(self.name)
        log.debug("hipbmm lowering: rewrote %s at %s -> %s (N=%d, K=%d)", self.name, node.name, out.name,
                  _val(g.b).shape[1], _val(g.b).shape[0])


FORMS = tuple(
    form
    for form in (
        Form("channelwise", prims.convert_element_type.default, extract_channelwise, pass_number=0),
        Form("scaled_mm", aten._scaled_mm.default, extract_scaled_mm, pass_number=1),
        # _scaled_mm_v2 exists from PyTorch 2.10 (all supported versions); guarded all the same.
        hasattr(aten, "_scaled_mm_v2")
        and Form("scaled_mm_v2", aten._scaled_mm_v2.default, extract_scaled_mm_v2, pass_number=1),
    )
    if form
)
