"""The pattern forms the freezing pass rewrites into ``hipbmm.hipb_mm_fp8``.

Each form is a few small pieces:

- a *pattern* that finds candidates (Inductor's pattern matcher indexes it by target), and a
  *structural test* that only walks the graph (targets and arguments, no tensor values) and says
  whether a node is a candidate of that form at all;
- an *extractor* that reads a candidate into a :class:`Gemm` (operands, scales, bias, output
  dtype, and the nodes that die), or returns the reason it is skipped;
- the shared *checks* (:data:`.checks.CHECKS`, named functions, each returning ``None`` or the
  reason a candidate is skipped), then the shared :func:`.rewrite.rewrite`.

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
from typing import Callable, Optional

import torch
import torch.fx as fx

from . import LoweringSettingError
from .checks import classify
from .counters import record_rewrite, record_skip
from .gemm import (DISABLED, NO_SWIZZLE, ROWWISE, Context, Extracted, Gemm, aten, bind, explicit_backend, is_call,
                   is_unit_constant, known, lowering_enabled, one_element, prims, val)
from .rewrite import rewrite

__all__ = ["FORMS", "Form", "find_candidates", "channelwise_chain"]

log = logging.getLogger("hipbmm_inductor")


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
    alpha: object = 1  # add(x, bias, alpha=...): the bias's multiplier


_CHAIN_LINKS = (aten.mul.Tensor, aten.slice.Tensor, aten._scaled_mm.default)


def _reaches_mm(node, depth: int = 3) -> bool:
    """Whether ``node`` is a ``_scaled_mm``, or a mul/slice chain of at most ``depth`` links down
    to one: how the GEMM's side of a ``mul`` is told from a scale that is itself a product."""
    if not (isinstance(node, fx.Node) and node.op == "call_function" and node.target in _CHAIN_LINKS):
        return False
    if node.target is aten._scaled_mm.default:
        return True
    if depth == 0:
        return False
    if node.target is aten.slice.Tensor:
        return _reaches_mm(node.args[0], depth - 1)
    return any(_reaches_mm(a, depth - 1) for a in node.args[:2])


def _split_mul(node) -> Optional[tuple[fx.Node, object]]:
    """``mul(x, s)`` or ``mul(s, x)`` where ``x`` leads down to the ``_scaled_mm``: ``(x, s)``. The
    scale may be a product too (``amax(x) * (1 / 448)`` computed in the graph), so the side is told
    by where it leads, not by its op."""
    if not is_call(node, aten.mul.Tensor):
        return None
    p, q = node.args[:2]
    if _reaches_mm(p):
        return p, q
    if _reaches_mm(q):
        return q, p
    return None


def channelwise_chain(root: fx.Node) -> Optional[Chain]:
    """Walk ``.to(dtype) <- [+ bias] <- * s2 <- * s1 <- [narrow] <- _scaled_mm(fp32, per-tensor)``.

    Reads only targets, arguments and shape metadata; ``None`` where ``root`` does not end one.
    """
    if not is_call(root, prims.convert_element_type.default) or len(root.args) < 2:
        return None
    x, out_dtype = root.args[0], root.args[1]
    nodes = [root]
    bias = None
    alpha = 1
    if is_call(x, aten.add.Tensor):
        add, (p, q) = x, x.args[:2]
        if _split_mul(p) is not None:
            x, bias = p, q
        elif _split_mul(q) is not None:
            x, bias = q, p
        else:
            return None
        alpha = add.kwargs.get("alpha", add.args[2] if len(add.args) > 2 else 1)
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
    if is_call(mm, aten.slice.Tensor):
        sl = bind(mm)  # narrow(out, 0, 0, rows) traces to slice(out, 0, 0, rows)
        if not (sl["dim"] == 0 and sl["start"] in (0, None) and sl["step"] == 1):
            return None
        nodes.append(mm)
        mm, row_end = sl["self"], sl["end"]
    if not is_call(mm, aten._scaled_mm.default):
        return None
    args = bind(mm)
    if args["out_dtype"] != torch.float32 or not (one_element(args["scale_a"]) and one_element(args["scale_b"])):
        return None  # a rowwise _scaled_mm followed by multiplies: the rowwise form's business
    nodes.append(mm)
    return Chain(root, mm, nodes, s1, s2, bias, row_end, out_dtype, alpha)


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
        if is_call(node, aten._scaled_mm.default):
            out.append(("scaled_mm", node))
        elif hasattr(aten, "_scaled_mm_v2") and is_call(node, aten._scaled_mm_v2.default):
            out.append(("scaled_mm_v2", node))
    return out


# ------------------------------------------------------------------------------ extractors
# Each form's structural test (graph walk only, runs on every node its pattern indexes), then its
# extractor (runs only for a candidate, once the lowering is known to be enabled).


def structure_scaled_mm(node: fx.Node):
    return None if node in _claimed else node


def extract_scaled_mm(node: fx.Node, found, ctx: Context) -> Extracted:
    args = bind(node)
    out_dtype = args["out_dtype"] or getattr(val(args["self"]), "dtype", None)
    if args["scale_result"] is not None:
        return "scale_result is set (only None is supported)"
    if out_dtype == torch.float32 and one_element(args["scale_a"]) and one_element(args["scale_b"]):
        # The channelwise form's kind of GEMM (fp32 out, one-element scales) where that form found
        # no chain: say so, rather than "per-tensor scale_a (needs per-token [M, 1])".
        return ("per-tensor scale_a and scale_b with fp32 out (needs per-token [M, 1] x per-channel [1, N]), "
                "and no channelwise chain around it (.to(dtype) <- [+ bias] <- * scale <- * scale <- [narrow] "
                "<- _scaled_mm)")
    return Gemm("scaled_mm", node, [node], args["self"], args["mat2"], args["scale_a"], args["scale_b"],
                args["bias"], out_dtype)


def structure_node(node: fx.Node):
    return node


def extract_scaled_mm_v2(node: fx.Node, found, ctx: Context) -> Extracted:
    args = bind(node)
    recipes = (list(args["recipe_a"]), list(args["recipe_b"]))
    if recipes != ([ROWWISE], [ROWWISE]) or len(args["scale_a"]) != 1 or len(args["scale_b"]) != 1:
        return f"scale recipes {recipes} are not RowWise x RowWise (one scale tensor each)"
    if any(list(s) not in ([], [NO_SWIZZLE]) for s in (args["swizzle_a"], args["swizzle_b"])):
        return "swizzled scales"
    if list(args["contraction_dim"] or []) not in ([], [1, 0]):
        return f"contraction_dim {list(args['contraction_dim'])} is not the default"
    out_dtype = args["out_dtype"] or getattr(val(args["self"]), "dtype", None)
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
    args = bind(chain.mm)
    if args["bias"] is not None or args["scale_result"] is not None:
        return "the fp32 _scaled_mm itself has a bias or scale_result"
    if chain.bias is not None and not isinstance(chain.bias, fx.Node):
        return "the bias is a Python scalar"
    if chain.alpha != 1:
        return f"the bias is added with alpha={chain.alpha!r} (only 1 is supported)"
    # s1 and s2 are the two scales in either order: tell them apart by shape.
    n = val(args["mat2"]).shape[1]
    s1, s2 = chain.s1, chain.s2
    sa, sb = (s2, s1) if _looks_per_channel(s1, n) and not _looks_per_channel(s2, n) else (s1, s2)
    ua, ub = args["scale_a"], args["scale_b"]
    return Gemm("channelwise", root, nodes, args["self"], args["mat2"], sa, sb, chain.bias, chain.out_dtype,
                row_end=chain.row_end,
                tensor_scale_a=None if is_unit_constant(ctx.gm, ua) else ua,
                tensor_scale_b=None if is_unit_constant(ctx.gm, ub) else ub)


def _looks_per_channel(s, n) -> bool:
    v = val(s)
    if v is None:
        return False
    shape = list(v.shape)
    return (len(shape) == 1 and known(shape[0] == n) and not known(shape[0] == 1)) or (
        len(shape) == 2 and known(shape[0] == 1) and known(shape[1] == n) and not known(shape[1] == 1)
    )


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
        # Not at the top: this module loads while Inductor's config does (.inductor_pass imports it),
        # and the pattern matcher imported then is a circular import inside Inductor.
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
                  val(g.b).shape[1], val(g.b).shape[0])


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
