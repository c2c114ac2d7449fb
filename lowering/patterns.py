"""The pattern forms the freezing pass rewrites into ``hipbmm.hipb_mm_fp8``, and the rewrite.

Each form is a few small pieces:

- a *pattern* that finds candidates (Inductor's pattern matcher indexes it by target), and a
  *structural test* that only walks the graph (targets and arguments, no tensor values) and says
  whether a node is a candidate of that form at all;
- an *extractor* that reads a candidate into a :class:`Gemm` (operands, scales, bias, output
  dtype, and the nodes that die), or returns the reason it is skipped;
- the shared *checks* (:data:`CHECKS`, named functions, each returning ``None`` or the reason a
  candidate is skipped), then the shared :func:`rewrite`.

Forms (graphs as they look once freezing has folded ``weight.t()``):

``scaled_mm``
    ``aten._scaled_mm(a, b, scale_a [M,1], scale_b [1,N], bias?, None, bf16, fast_accum?)``, any
    arity (4 to 8 positional arguments: trailing defaults are dropped, so one ``CallFunction``
    would match only one arity; ``CallFunctionVarArgs`` matches them all).
``scaled_mm_v2``
    ``aten._scaled_mm_v2(a, b, [scale_a], [RowWise], [], [scale_b], [RowWise], [], bias, bf16,
    ...)``: what ``torch.nn.functional.scaled_mm`` traces to (PyTorch 2.10+).
``channelwise``
    vLLM's fallback: ``_scaled_mm(a, b, s, t, out_dtype=fp32)`` with one-element scales (vLLM
    passes a unit tensor, often a module-level global that Dynamo lifts to a graph input),
    optional row ``narrow`` (``slice``), ``* scale_a * scale_b`` in any order, optional
    ``+ bias``, ``.to(bf16)``. Found from its final cast, walked upwards by
    :func:`channelwise_chain`. The one-element scales need not be known: they are multiplied into
    the per-token and per-channel scales (and dropped where they are constants equal to 1).

The rewrite inserts ``permute(shuffle_weight(permute(b)))`` on the frozen weight, once per weight
(candidates that share a weight share the packed one). Every input of that chain is a constant,
so Inductor's final ``constant_fold`` (which runs after the freezing patterns) replaces it with
one pre-shuffled constant whose strides are ``(1, K)``; the unshuffled constant loses its last
user and is deleted.

Safety: the pass never breaks or changes a model. Nothing but the structural test runs while the
lowering is disabled; any exception inside the extraction, the checks or the rewrite is logged,
counted as a skip (``internal error ...``) and leaves the graph as it was. The one exception that
escapes is :class:`LoweringSettingError`: a hipbmm environment value that is invalid, read where a
candidate needs it, so that a model with FP8 GEMMs fails with a message that names the variable
and its allowed values, and a model without them never reads it.
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

from . import LoweringSettingError
from .counters import record_rewrite, record_skip

__all__ = [
    "Gemm", "Context", "CHECKS", "FORMS", "Form", "rewrite", "explicit_backend", "LoweringSettingError",
    "find_candidates", "DISABLED",
]

log = logging.getLogger("hipbmm_inductor")

aten = torch.ops.aten
prims = torch.ops.prims

ROWWISE = 1  # int(torch.nn.functional.ScalingType.RowWise); the graph stores the int
NO_SWIZZLE = 0  # int(torch.nn.functional.SwizzleType.NO_SWIZZLE)

DISABLED = "lowering disabled (HIPBMM_LOWERING=0 or hipbmm_inductor.disable())"


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
    # Channelwise: the one-element scales of the fp32 GEMM, multiplied into scale_a / scale_b by
    # the rewrite (None where absent or a constant equal to 1).
    tensor_scale_a: Optional[fx.Node] = None
    tensor_scale_b: Optional[fx.Node] = None
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
    """The real tensor behind a ``get_attr`` node (a frozen parameter), else ``None``."""
    from torch._subclasses.fake_tensor import is_fake

    if isinstance(node, fx.Node) and node.op == "get_attr" and gm is not None:
        obj = gm
        for part in node.target.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.Tensor) and not is_fake(obj) and obj.device.type != "meta":
            return obj
    return None


def _is_unit_constant(gm: fx.GraphModule, node) -> bool:
    """True only where ``node`` is known at compile time to be a one-element 1.0.

    A frozen constant is read from the graph module's real attribute, with the fake mode that
    surrounds the freezing passes switched off for the read: reading a real tensor's value under
    fake mode is what ``FakeTensorMode`` refuses ("Please convert all Tensors to FakeTensors").
    Anything else (a graph input, a computed value) is simply not known to be 1; the rewrite then
    multiplies by it, which is exact either way.
    """
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    try:
        if isinstance(node, (int, float)):
            return node == 1
        if _is_call(node, aten.full.default):
            return list(node.args[0]) in ([], [1], [1, 1]) and node.args[1] == 1
        if _is_call(node, aten.ones.default):
            return list(node.args[0]) in ([], [1], [1, 1])
        t = _constant(gm, node)
        if t is None or t.numel() != 1:
            return False
        with unset_fake_temporarily():
            return bool(t.detach().float().cpu().item() == 1.0)
    except Exception:  # noqa: BLE001 (not knowing only costs a multiply)
        log.debug("hipbmm lowering: could not read the one-element scale %s", node, exc_info=True)
        return False


def _one_element(node) -> bool:
    v = _val(node)
    return isinstance(v, torch.Tensor) and _known(v.numel() == 1)


def explicit_backend() -> bool:
    """A backend chosen by name (env or ``set_backend``) opts the pass in on every device."""
    return envs.is_set("HIPBMM_BACKEND") and envs.HIPBMM_BACKEND != "auto"


def lowering_enabled() -> bool:
    """``HIPBMM_LOWERING`` / ``enable()`` / ``disable()``; an invalid value raises, naming it."""
    from . import is_enabled

    try:
        return is_enabled()
    except ValueError as e:
        raise LoweringSettingError(str(e)) from e


@dataclass
class Context:
    """What every check of one candidate may consult, read once the candidate is known."""

    gm: fx.GraphModule
    explicit: bool  # a backend named by the user: rewrite wherever it can run

    def backend(self, device: torch.device):
        """The backend for ``device``, or the reason there is none; a bad setting raises."""
        try:
            return registry.backend_for(device)
        except BackendUnavailableError as e:
            return f"no backend can run on {device.type}: {e}"
        except ValueError as e:  # HIPBMM_BACKEND names no backend, or a backend's switch is invalid
            raise LoweringSettingError(str(e)) from e


# ------------------------------------------------------------------- structure (no values read)

# _scaled_mm nodes that belong to a channelwise candidate, already counted there: the rowwise
# form must not count them a second time (its pattern runs in a later pass over the same graph).
_claimed: "weakref.WeakSet[fx.Node]" = weakref.WeakSet()


@dataclass
class Chain:
    """The nodes of a channelwise candidate, as :func:`channelwise_chain` walked them."""

    root: fx.Node
    mm: fx.Node
    nodes: list[fx.Node]  # root first, mm last
    s1: object
    s2: object
    bias: object
    row_end: object
    out_dtype: object


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


def channelwise_chain(root: fx.Node) -> Optional[Chain]:
    """Walk ``.to(dtype) <- [+ bias] <- * s2 <- * s1 <- [narrow] <- _scaled_mm(fp32, per-tensor)``.

    Reads only targets, arguments and shape metadata; ``None`` where ``root`` does not end one.
    """
    if not _is_call(root, prims.convert_element_type.default) or len(root.args) < 2:
        return None
    x, out_dtype = root.args[0], root.args[1]
    nodes = [root]
    bias = None
    if _is_call(x, aten.add.Tensor):
        add, (p, q) = x, x.args[:2]
        if _split_mul(p) is not None:
            x, bias = p, q
        elif _split_mul(q) is not None:
            x, bias = q, p
        else:
            return None
        nodes.append(add)
    outer = _split_mul(x)
    if outer is None:
        return None
    inner_node, s2 = outer
    inner = _split_mul(inner_node)
    if inner is None:
        return None
    mm, s1 = inner
    nodes += [x, inner_node]
    row_end = None
    if _is_call(mm, aten.slice.Tensor):
        sl = _bind(mm)  # narrow(out, 0, 0, rows) traces to slice(out, 0, 0, rows)
        if not (sl["dim"] == 0 and sl["start"] in (0, None) and sl["step"] == 1):
            return None
        nodes.append(mm)
        mm, row_end = sl["self"], sl["end"]
    if not _is_call(mm, aten._scaled_mm.default):
        return None
    args = _bind(mm)
    if args["out_dtype"] != torch.float32 or not (_one_element(args["scale_a"]) and _one_element(args["scale_b"])):
        return None  # a rowwise _scaled_mm followed by multiplies: the rowwise form's business
    nodes.append(mm)
    return Chain(root, mm, nodes, s1, s2, bias, row_end, out_dtype)


def find_candidates(graph: fx.Graph) -> list[tuple[str, fx.Node]]:
    """Every candidate of every form in ``graph``, as ``(form name, node)``, without reading values.

    Used where the freezing patterns will not run (freezing off, grad on) to say what was left.
    """
    out, in_chains = [], set()
    for node in graph.nodes:
        chain = channelwise_chain(node) if node.op == "call_function" else None
        if chain is not None:
            out.append(("channelwise", node))
            in_chains.add(chain.mm)
    for node in graph.nodes:
        if node in in_chains:
            continue
        if _is_call(node, aten._scaled_mm.default):
            out.append(("scaled_mm", node))
        elif hasattr(aten, "_scaled_mm_v2") and _is_call(node, aten._scaled_mm_v2.default):
            out.append(("scaled_mm_v2", node))
    return out


# ------------------------------------------------------------------------------ extractors
# Each form's structural test (graph walk only, runs on every node its pattern indexes), then its
# extractor (runs only for a candidate, once the lowering is known to be enabled).


def structure_scaled_mm(node: fx.Node):
    return None if node in _claimed else node


def extract_scaled_mm(node: fx.Node, found, ctx: Context) -> Extracted:
    args = _bind(node)
    out_dtype = args["out_dtype"] or getattr(_val(args["self"]), "dtype", None)
    if args["scale_result"] is not None:
        return "scale_result is set (only None is supported)"
    return Gemm("scaled_mm", node, [node], args["self"], args["mat2"], args["scale_a"], args["scale_b"],
                args["bias"], out_dtype)


def structure_node(node: fx.Node):
    return node


def extract_scaled_mm_v2(node: fx.Node, found, ctx: Context) -> Extracted:
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


def structure_channelwise(root: fx.Node):
    chain = channelwise_chain(root)
    if chain is not None:
        _claimed.add(chain.mm)  # from here on this GEMM is counted as a channelwise candidate
    return chain


def extract_channelwise(root: fx.Node, chain: Chain, ctx: Context) -> Extracted:
    nodes = [n for n in chain.nodes if isinstance(n, fx.Node)]
    for n in nodes[1:]:
        if len(n.users) != 1:
            return f"intermediate {n.target} result has other users ({len(n.users)})"
    args = _bind(chain.mm)
    if args["bias"] is not None or args["scale_result"] is not None:
        return "the fp32 _scaled_mm itself has a bias or scale_result"
    if chain.bias is not None and not isinstance(chain.bias, fx.Node):
        return "the bias is a Python scalar"
    # s1 and s2 are the two scales in either order: tell them apart by shape.
    n = _val(args["mat2"]).shape[1]
    s1, s2 = chain.s1, chain.s2
    sa, sb = (s2, s1) if _looks_per_channel(s1, n) and not _looks_per_channel(s2, n) else (s1, s2)
    ua, ub = args["scale_a"], args["scale_b"]
    return Gemm("channelwise", root, nodes, args["self"], args["mat2"], sa, sb, chain.bias, chain.out_dtype,
                row_end=chain.row_end,
                tensor_scale_a=None if _is_unit_constant(ctx.gm, ua) else ua,
                tensor_scale_b=None if _is_unit_constant(ctx.gm, ub) else ub)


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


def fp8_operands(g: Gemm, ctx: Context) -> Optional[str]:
    a, b = _val(g.a), _val(g.b)
    if a is None or b is None:
        return "operands have no fake value"
    if a.dtype not in FP8_DTYPES or b.dtype != a.dtype:
        return f"operand dtypes {a.dtype} x {b.dtype} (need one of {', '.join(map(str, FP8_DTYPES))}, equal)"
    if a.dim() != 2 or b.dim() != 2:
        return "operands are not 2-D"
    return None


def frozen_weight(g: Gemm, ctx: Context) -> Optional[str]:
    if not (isinstance(g.b, fx.Node) and g.b.op == "get_attr"):
        return (
            "weight is a graph input, not a frozen constant (freezing folds module parameters and "
            "buffers only; a weight passed as an argument or computed in forward stays an input)"
        )
    return None


def rowwise_scales(g: Gemm, ctx: Context) -> Optional[str]:
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


def bf16_output(g: Gemm, ctx: Context) -> Optional[str]:
    if g.out_dtype != torch.bfloat16:
        return f"out_dtype {g.out_dtype} (hipBLASLt's rowwise FP8 path writes bf16 only)"
    return None


def supported_shape(g: Gemm, ctx: Context) -> Optional[str]:
    K, N = _val(g.b).shape
    if not (isinstance(K, int) and isinstance(N, int)):
        return "weight has symbolic sizes"
    why = check_shape_supported(N, K)
    return f"unsupported weight shape: {why}" if why else None


def row_major_a(g: Gemm, ctx: Context) -> Optional[str]:
    a = _val(g.a)
    if not (_known(a.stride(1) == 1) and (_known(a.stride(0) == a.shape[1]) or _known(a.shape[0] <= 1))):
        return "activation is not row-major [M, K]"
    return None


def bias_ok(g: Gemm, ctx: Context) -> Optional[str]:
    if g.bias is None:
        return None
    v = _val(g.bias)
    n = _val(g.b).shape[1]
    if v is None or v.dim() != 1 or not _known(v.shape[0] == n):
        return f"bias shape {list(v.shape) if v is not None else '?'} is not [N]"
    if v.dtype not in BIAS_DTYPES:
        return f"bias dtype {v.dtype} (need one of bf16, fp32)"
    return None


def _static_int(x) -> Optional[int]:
    """``x`` as an int where it is one (or a SymInt with a known value), else ``None``."""
    if isinstance(x, int):
        return x
    try:
        from torch.fx.experimental.symbolic_shapes import is_concrete_int

        return int(x) if is_concrete_int(x) else None
    except Exception:
        return None


def backend_allows(g: Gemm, ctx: Context) -> Optional[str]:
    device = _val(g.a).device
    backend = ctx.backend(device)
    if isinstance(backend, str):
        return backend
    if ctx.explicit:
        return None
    K, N = _val(g.b).shape
    m = _static_int(g.rows)
    # NOTE: a backend may route by shape (`is_fast_for(device, n, k, m)`, m None when M is
    # symbolic); older backends only know a per-device answer (`is_fast(device)`).
    fast_for = getattr(backend, "is_fast_for", None)
    fast = fast_for(device, N, K, m) if callable(fast_for) else backend.is_fast(device)
    if not fast:
        where = f"{device.type} at N={N}, K={K}, M={'symbolic' if m is None else m}"
        return (
            f"backend {backend.name!r} is not known to beat the vendor GEMM on {where} "
            f"(HIPBMM_BACKEND=auto; name a backend to opt in)"
        )
    return None


CHECKS: tuple[Callable[[Gemm, Context], Optional[str]], ...] = (
    fp8_operands,
    frozen_weight,
    rowwise_scales,
    bf16_output,
    row_major_a,
    bias_ok,
    supported_shape,
    backend_allows,
)


def classify(g: Extracted, ctx: Context) -> Extracted:
    if not isinstance(g, Gemm):
        return g
    for check in CHECKS:
        reason = check(g, ctx)
        if reason is not None:
            return reason
    return g


# --------------------------------------------------------------------------------- rewrite


def _call(graph: fx.Graph, created: list, target, *args) -> fx.Node:
    """Insert ``target(*args)`` with ``meta['val']`` computed on the inputs' fake values."""
    from torch._guards import detect_fake_mode
    from torch.utils._pytree import tree_flatten, tree_map

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
    if _val(s).dtype != torch.float32:
        s = _call(graph, created, prims.convert_element_type.default, s, torch.float32)
    if factor is not None:  # [M, 1] * one element: a fresh contiguous [M, 1]
        return _call(graph, created, aten.mul.Tensor, s, factor)
    v = _val(s)
    if not (_known(v.stride(0) == 1) or _known(v.shape[0] <= 1)):
        s = _call(graph, created, aten.clone.default, s)  # a strided [M, 1] column clones to contiguous
    return s


def _scale_b(graph, created, s, n, factor):
    """Per-channel scales as the op takes them: fp32 ``[1, N]`` with unit stride along N.

    Real code carries them as ``[N, 1]`` transposed (vLLM: ``weight_scale.t()``), as 1-D ``[N]``
    or as ``[1, N]``; on a frozen graph every node added here folds into the scale constant.
    """
    if _val(s).dtype != torch.float32:
        s = _call(graph, created, prims.convert_element_type.default, s, torch.float32)
    v = _val(s)
    if not (v.dim() == 2 and v.stride(1) == 1):
        if v.dim() == 2:
            s = _call(graph, created, aten.reshape.default, s, [n])
        if _val(s).stride(0) != 1:
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
    t = _constant(gm, b)
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
    n = _val(g.b).shape[1]
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
            # given, on every call of the compiled graph (~0.4 us each, benchmarks/op_overhead.py).
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


# ----------------------------------------------------------------------------------- forms


def _internal_error(form: str, node, e: BaseException) -> None:
    text = f"{type(e).__name__}: {e}".splitlines()[0][:160]
    reason = f"internal error in the hipbmm pass, graph left unchanged ({text})"
    record_skip(form, reason)
    log.warning("hipbmm lowering: %s at %s: %s", form, getattr(node, "name", node), reason, exc_info=True)


@dataclass(frozen=True)
class Form:
    name: str
    target: object  # the op the pattern is indexed by
    structure: Callable[[fx.Node], object]  # a candidate of this form? (graph walk only)
    extract: Callable[[fx.Node, object, Context], Extracted]
    pass_number: int  # channelwise first, so that its _scaled_mm is claimed before the rowwise pass

    def pattern(self):
        from torch._inductor.pattern_matcher import CallFunctionVarArgs

        return CallFunctionVarArgs(self.target)

    def decide(self, node: fx.Node, gm: fx.GraphModule, count: bool = True) -> Optional[Gemm]:
        """Decide (and, with ``count``, count a skip): the :class:`Gemm` to rewrite, or ``None``."""
        record = record_skip if count else (lambda form, reason: None)
        try:
            found = self.structure(node)
        except Exception as e:  # noqa: BLE001 (the pass must never break a compile)
            if count:
                _internal_error(self.name, node, e)
            return None
        if found is None:
            return None
        if not lowering_enabled():  # an invalid HIPBMM_LOWERING raises here, naming the variable
            record(self.name, DISABLED)
            return None
        try:
            ctx = Context(gm, explicit_backend())
            g = classify(self.extract(node, found, ctx), ctx)
        except LoweringSettingError:
            raise
        except Exception as e:  # noqa: BLE001
            if count:
                _internal_error(self.name, node, e)
            return None
        if isinstance(g, str):
            record(self.name, g)
            if count:
                log.debug("hipbmm lowering: skipped %s at %s: %s", self.name, node.name, g)
            return None
        return g

    def extra_check(self, match) -> bool:
        return self.decide(match.output_node(), match.graph.owning_module) is not None

    def handler(self, match, *args, **kwargs) -> None:
        # NOTE: decided again rather than handed over from extra_check: a module-level map from
        # node to candidate would keep graphs (and their frozen weights) alive.
        node = match.output_node()
        try:
            g = self.decide(node, match.graph.owning_module, count=False)
            if g is None:
                raise RuntimeError("the candidate extra_check accepted no longer passes its checks")
            out = rewrite(g, match.graph, match.graph.owning_module)
        except LoweringSettingError:
            raise
        except Exception as e:  # noqa: BLE001 (rewrite() has already put the graph back)
            _internal_error(self.name, node, e)
            return
        record_rewrite(self.name)
        log.debug("hipbmm lowering: rewrote %s at %s -> %s (N=%d, K=%d)", self.name, node.name, out.name,
                  _val(g.b).shape[1], _val(g.b).shape[0])


FORMS = tuple(
    form
    for form in (
        Form("channelwise", prims.convert_element_type.default, structure_channelwise, extract_channelwise,
             pass_number=0),
        Form("scaled_mm", aten._scaled_mm.default, structure_scaled_mm, extract_scaled_mm, pass_number=1),
        # _scaled_mm_v2 exists from PyTorch 2.10 (all supported versions); guarded all the same.
        hasattr(aten, "_scaled_mm_v2")
        and Form("scaled_mm_v2", aten._scaled_mm_v2.default, structure_node, extract_scaled_mm_v2, pass_number=1),
    )
    if form
)
