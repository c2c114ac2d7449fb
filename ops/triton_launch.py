"""Launch an already-compiled Triton kernel again without Triton's binder.

``kernel[grid](*args)`` does, on every call, what only depends on the kernel and the argument
*kinds*: it binds and specialises the arguments (alignment of every pointer, ``== 1`` and
divisibility of every int), hashes them into the compiled-kernel cache key, checks the kernel's
globals, builds launch metadata for profiler hooks, expands each host TMA descriptor by encoding
a ``CUtensorMap`` (``cuTensorMapEncodeTiled``), and resolves every tensor's pointer through
``cuPointerGetAttribute``. At decode sizes that is most of a call's host time
(``benchmarks/results/h200/host_cost.json`` has the figures).

A :class:`CompiledLaunch` is built from the ``CompiledKernel`` that such a first call returned.
It calls the kernel's C launcher directly with pointers as plain ints, and with each TMA
descriptor expanded by Triton's own routine once per (address, shape) and then reused: a
``CUtensorMap`` holds nothing but the address, dims, strides, box and swizzle, so one encoded for
an address is exact for any tensor later found at that address with the same shape. Descriptors
travel by value in the kernel parameters, so replays under CUDA graphs are unaffected.

It is only built where the first call proves it valid (:func:`CompiledLaunch.create` returns
``None`` otherwise, and callers keep using ``kernel[grid]``):

- the Triton runtime is one whose launcher layout this module knows (the C entry point takes
  ``_BASE_ARGS`` then the flattened kernel arguments; checked against the driver module);
- the kernel needs no global or profile scratch memory (those are allocated per launch);
- no launch hook is installed (profilers such as Proton; checked again on every call).

What the binder would have specialised is the caller's to keep constant: the caller keys its
cached launches on every int argument's value and on which pointers are 16-byte aligned
(:mod:`.triton_plan`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

import torch

from hipbmm_inductor import hardware

log = logging.getLogger("hipbmm_inductor")

__all__ = ["CompiledLaunch", "current_stream", "hooks_installed"]

# The C launcher's leading arguments in Triton 3.4 to 3.6 (driver._BASE_ARGS_FORMAT): grid x/y/z,
# stream, function, cooperative, PDL, global scratch, profile scratch, packed metadata, launch
# metadata, enter hook, exit hook.
_BASE_ARGS_FORMAT = "iiiKKppOOOOOO"

# The raw handle of the current stream on a device index (what Triton launches on); absent from
# CPU builds of torch, where nothing is launched.
current_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _hooks_idle(knobs: Any) -> bool:
    runtime = knobs.runtime
    for hook in (runtime.launch_enter_hook, runtime.launch_exit_hook):
        # Triton 3.6 keeps hooks in a HookChain (always present, `.calls` empty when idle);
        # older releases use None for "no hook".
        if hook is not None and getattr(hook, "calls", True):
            return False
    return True


def _raw_launcher(runner: Any) -> Optional[Callable]:
    """The C entry point under Triton's Python launcher wrapper, or ``None`` if not recognised."""
    launch = getattr(runner, "launch", None)
    if launch is None:
        return None
    if type(launch).__name__ == "builtin_function_or_method":
        return launch  # no tensor descriptors: Triton calls the C function directly
    # With tensor descriptors Triton wraps the C function in a closure that re-encodes every
    # descriptor per call; the C function is its free variable `launcher`.
    code, cells = getattr(launch, "__code__", None), getattr(launch, "__closure__", None)
    if code is None or cells is None or "launcher" not in code.co_freevars:
        return None
    raw = cells[code.co_freevars.index("launcher")].cell_contents
    return raw if type(raw).__name__ == "builtin_function_or_method" else None


class CompiledLaunch:
    """One compiled kernel, launched with already-flattened arguments.

    ``args`` are the kernel's arguments in signature order with each tensor descriptor replaced
    by :meth:`expand_descriptor`'s list and each pointer given as an int; constexpr arguments
    stay in their place (the launcher skips them).
    """

    __slots__ = ("launch_raw", "prefix", "_knobs", "_expand", "_desc_meta", "name", "hook_lists", "_chains")

    def __init__(self, launch: Callable, function: int, packed_metadata: Any, cooperative: bool, pdl: bool,
                 knobs: Any, expand: Optional[Callable], desc_meta: Sequence, name: str = "kernel"):
        # Hot callers call launch_raw(gx, gy, gz, stream, *prefix, *args) themselves (one Python
        # frame fewer than __call__); prefix: function, cooperative, PDL, no scratch buffers, the
        # packed metadata, and no launch metadata or hooks.
        self.launch_raw = launch
        self.prefix = (function, bool(cooperative), bool(pdl), None, None, packed_metadata, None, None, None)
        self._knobs = knobs
        self._expand = expand
        self._desc_meta = list(desc_meta)
        self.name = name
        runtime = knobs.runtime
        chains = (runtime.launch_enter_hook, runtime.launch_exit_hook)
        # Triton 3.6's hook chains are fixed objects (knobs.runtime is a process-wide singleton)
        # whose `calls` list grows when a profiler adds a hook: callers check those two lists
        # (empty: no hook) on every launch, and hooks_idle() also checks that the chains are still
        # the ones installed (a plain assignment to the knob replaces them). None where this
        # Triton keeps hooks otherwise.
        self._chains = chains
        self.hook_lists = tuple(c.calls for c in chains) if all(hasattr(c, "calls") for c in chains) else None

    @classmethod
    def create(cls, compiled: Any, arg_names: Sequence[str]) -> Optional["CompiledLaunch"]:
        """A launcher for ``compiled`` (what ``kernel[grid](...)`` returned), or ``None`` where
        this runtime or kernel is not one it can launch exactly as Triton would."""
        try:
            return cls._create(compiled, arg_names)
        except Exception as e:  # noqa: BLE001 - a runtime this module does not know: Triton's path
            log.debug("hipbmm_inductor: no binder-free launch (%s: %s)", type(e).__name__, e)
            return None

    @classmethod
    def _create(cls, compiled: Any, arg_names: Sequence[str]) -> Optional["CompiledLaunch"]:
        if hardware.is_rocm():
            return None  # ROCm's launcher takes its arguments in another order (no PDL flag)
        try:
            # Probed here, not imported at the top: a Triton without knobs (before 3.4) or without
            # the NVIDIA driver module is one this relaunch does not know, and keeps Triton's binder.
            import triton
            from triton import knobs  # (probed too)
            from triton.backends.nvidia import driver as nv_driver  # (probed too)
        except ImportError:
            return None
        why = None
        src = getattr(compiled, "src", None)
        fn = getattr(src, "fn", None)
        if compiled is None or fn is None:
            why = "no compiled kernel (interpreter?)"
        elif list(getattr(fn, "arg_names", ())) != list(arg_names):
            why = f"argument names {getattr(fn, 'arg_names', None)} differ from {list(arg_names)}"
        elif getattr(fn, "pre_run_hooks", None):
            why = "the kernel has pre-run hooks (Triton runs them on every launch)"
        elif getattr(nv_driver, "_BASE_ARGS_FORMAT", None) != _BASE_ARGS_FORMAT:
            why = f"Triton {triton.__version__}'s launcher layout is not the known one"
        elif not _hooks_idle(knobs):
            why = "a launch hook is installed"
        if why is None:
            runner = compiled.run  # loads the module on the current device if not done yet
            raw = _raw_launcher(runner)
            if not isinstance(runner, getattr(nv_driver, "CudaLauncher", ())):
                why = f"the launcher is a {type(runner).__name__}, not the CUDA one"
            elif raw is None:
                why = "the C launcher is not reachable"
            elif getattr(runner, "global_scratch_size", 1) or getattr(runner, "profile_scratch_size", 1):
                why = "the kernel needs scratch memory per launch"
            elif getattr(runner, "num_ctas", 1) != 1:
                why = "clusters of several CTAs"
        if why is not None:
            log.debug("hipbmm_inductor: launching %s through Triton's binder: %s", getattr(fn, "__name__", "?"), why)
            return None
        meta = getattr(compiled.metadata, "tensordesc_meta", None) or []
        return cls(raw, compiled.function, compiled.packed_metadata, runner.launch_cooperative_grid,
                   runner.launch_pdl, knobs, getattr(nv_driver, "make_tensordesc_arg", None), meta,
                   name=compiled.name)

    def expand_descriptor(self, index: int, desc: Any) -> tuple:
        """The flattened launcher arguments of the ``index``-th tensor-descriptor argument.

        Encoded by Triton's own routine (so the bytes are what ``kernel[grid]`` would pass);
        tensors in the result are replaced by their addresses so that a cached expansion keeps
        no tensor alive.
        """
        if self._expand is None:
            raise RuntimeError("this Triton has no make_tensordesc_arg")
        meta = self._desc_meta[index] if index < len(self._desc_meta) else None
        return tuple(x.data_ptr() if isinstance(x, torch.Tensor) else x for x in self._expand(desc, meta))

    def hooks_idle(self) -> bool:
        lists, runtime = self.hook_lists, self._knobs.runtime
        if (lists is not None and runtime.launch_enter_hook is self._chains[0]
                and runtime.launch_exit_hook is self._chains[1]):
            return not (lists[0] or lists[1])
        return _hooks_idle(self._knobs)

    def __call__(self, grid: tuple[int, int, int], stream: int, args: tuple) -> None:
        self.launch_raw(grid[0], grid[1], grid[2], stream, *self.prefix, *args)


def hooks_installed() -> bool:
    """Whether a launch hook (a profiler) is installed in Triton now."""
    try:
        from triton import knobs  # as in _create: a Triton without knobs (before 3.4) gets no relaunch to guard
    except ImportError:
        return False
    return not _hooks_idle(knobs)
