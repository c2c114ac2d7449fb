"""What a candidate of the lowering is (:class:`Gemm`, :class:`Context`), and the small readers of
the FX graph that the forms, the checks and the rewrite share: values, constants read outside fake
mode, and the settings (read only once a candidate exists, :mod:`.patterns` says why).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import is_fake, unset_fake_temporarily
from torch.fx.experimental.symbolic_shapes import statically_known_true

from hipbmm_inductor import envs
from hipbmm_inductor.ops import registry
from hipbmm_inductor.ops.errors import BackendUnavailableError

from . import LoweringSettingError, is_enabled

__all__ = ["Gemm", "Context", "Extracted", "DISABLED", "explicit_backend", "lowering_enabled", "val", "is_call", "bind", "known", "constant", "is_unit_constant", "one_element"]

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
        """M as the scales see it: the narrowed row count (an int, or the node of a symbolic one:
        its traced value), else A's."""
        if self.row_end is None:
            return val(self.a).shape[0]
        return val(self.row_end) if isinstance(self.row_end, fx.Node) else self.row_end


Extracted = Union[Gemm, str, None]  # a Gemm, a skip reason, or "not this form"


# ----------------------------------------------------------------------------------- helpers


def val(x):
    return x.meta.get("val") if isinstance(x, fx.Node) else None


def is_call(node, target) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target is target


def bind(node: fx.Node) -> dict:
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


def known(cond) -> bool:
    """True only if ``cond`` holds for every value of the symbolic sizes (never guards)."""
    if isinstance(cond, bool):
        return cond
    return statically_known_true(cond)


def constant(gm: fx.GraphModule, node) -> Optional[torch.Tensor]:
    """The real tensor behind a ``get_attr`` node (a frozen parameter), else ``None``."""
    if isinstance(node, fx.Node) and node.op == "get_attr" and gm is not None:
        obj = gm
        for part in node.target.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.Tensor) and not is_fake(obj) and obj.device.type != "meta":
            return obj
    return None


def is_unit_constant(gm: fx.GraphModule, node) -> bool:
    """True only where ``node`` is known at compile time to be a one-element 1.0.

    A frozen constant is read from the graph module's real attribute, with the fake mode that
    surrounds the freezing passes switched off for the read: reading a real tensor's value under
    fake mode is what ``FakeTensorMode`` refuses ("Please convert all Tensors to FakeTensors").
    Anything else (a graph input, a computed value) is simply not known to be 1; the rewrite then
    multiplies by it, which is exact either way.
    """
    try:
        if isinstance(node, (int, float)):
            return node == 1
        if is_call(node, aten.full.default):
            return list(node.args[0]) in ([], [1], [1, 1]) and node.args[1] == 1
        if is_call(node, aten.ones.default):
            return list(node.args[0]) in ([], [1], [1, 1])
        t = constant(gm, node)
        if t is None or t.numel() != 1:
            return False
        with unset_fake_temporarily():
            return bool(t.detach().float().cpu().item() == 1.0)
    except Exception:  # noqa: BLE001 (not knowing only costs a multiply)
        log.debug("hipbmm lowering: could not read the one-element scale %s", node, exc_info=True)
        return False


def one_element(node) -> bool:
    v = val(node)
    return isinstance(v, torch.Tensor) and known(v.numel() == 1)


def explicit_backend() -> bool:
    """A backend chosen by name (env or ``set_backend``) opts the pass in on every device."""
    return envs.is_set("HIPBMM_BACKEND") and envs.HIPBMM_BACKEND != "auto"


def lowering_enabled() -> bool:
    """``HIPBMM_LOWERING`` / ``enable()`` / ``disable()``; an invalid value raises, naming it."""
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
