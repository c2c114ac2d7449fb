"""Launch plans of the Triton backend: what one GEMM shape launches, resolved once.

A plan is built on the first call of a (device, fp8 dtype, N, K, M, bias dtype, accumulation
mode, tuning state) and answers every later call of it. Building one asks the tuner for the
config, picks the kernel (the sm_90 Gluon kernel or the portable one), works out the grid, TMA
boxes and constexprs, and launches once through Triton (which compiles on first use). A call
after that is: read the addresses, allocate the output, look up the TMA descriptors encoded for
those addresses, launch the compiled kernel through its C launcher
(:class:`.triton_launch.CompiledLaunch`).

M is part of the key exactly, not bucketed: Triton specialises ``M == 1`` and ``M % 16``, and
the Gluon kernel's A boxes depend on M below ``BLOCK_M``. A serving process sees a bounded set
of token counts, and a plan is a few hundred bytes.

Triton specialises a kernel on which pointer arguments are 16-byte aligned, so a plan keeps one
relauncher per alignment pattern, learnt from the first call with that pattern (the usual case,
all aligned, is checked with one OR). Anything a plan cannot vouch for goes through Triton's own
launch path, with the same result, and is counted in ``plan.through_triton`` with the reason: a
launch hook (a profiler), a runtime whose launcher this package does not know, the interpreter;
an A or B the Gluon kernel's TMA cannot address runs on the portable kernel.
"""

from __future__ import annotations

from collections import Counter

import torch

from . import triton_fp8_gemm as portable
from .triton_launch import CompiledLaunch, current_stream, hooks_installed

__all__ = ["HopperPlan", "PortablePlan", "DESCRIPTOR_CACHE_SIZE", "WEIGHT_DESCRIPTOR_CACHE_SIZE", "evict_oldest", "into"]

# Encoded TMA descriptors kept per plan and operand. The caching allocator hands the same few
# activation and output addresses out step after step, so a handful are live at a time; past this
# many the oldest is dropped (a miss costs one encode through Triton's routine).
DESCRIPTOR_CACHE_SIZE = 64
# Weights are the other way round: one plan serves every layer whose weight has its shape, and a
# step visits them all in turn (80 addresses per shape in a 70B model), which a cache of 64 would
# miss on every call. They are constants, so this bound is only against callers that pass a new
# weight each time.
WEIGHT_DESCRIPTOR_CACHE_SIZE = 4096


def evict_oldest(cache: dict, limit: int) -> None:
    """Make room for one entry in ``cache`` (kept under ``limit``) by dropping the oldest inserted:
    a dict keeps insertion order, so this costs nothing on a hit, and the entries a loop is using
    now (the newest) survive, where clearing the whole cache would rebuild them all."""
    while len(cache) >= limit:
        del cache[next(iter(cache))]


def _put(cache: dict, key: int, value: tuple, limit: int = DESCRIPTOR_CACHE_SIZE) -> tuple:
    evict_oldest(cache, limit)
    cache[key] = value
    return value


def into(out, result: torch.Tensor) -> torch.Tensor:
    """``result``, or copied into the caller's ``out`` where one was given (the rare calls that
    cannot write there directly)."""
    return result if out is None else out.copy_(result)


def _mask(*ptrs: int) -> int:
    """Which pointers are 16-byte aligned, as a bit mask: Triton specialises each pointer argument
    on exactly that, so calls with equal masks run the same compiled kernel."""
    m = 0
    for i, p in enumerate(ptrs):
        if p % 16 == 0:
            m |= 1 << i
    return m


class _Plan:
    """What both kernels' plans share: the relaunchers per alignment mask and the fallback counts."""

    __slots__ = ("config", "prepared", "fast", "_masked", "_device", "_shape", "through_triton", "_index", "_grid",
                 "out_checked")

    def __init__(self, config: dict, prepared, device: torch.device) -> None:
        self.config = config
        self.prepared = prepared
        self.fast = None  # the relauncher for calls whose pointers are all aligned (the usual case)
        self._masked: dict = {}  # mask -> relauncher (or None: cannot be relaunched) for the others
        # Unpacked into torch.empty as separate ints, which its argument parser takes faster than a tuple.
        self._shape = (prepared.M, prepared.N)
        # NOTE: a plan holds no tensor. One allocated while cudagraph trees warm up or record
        # would sit in their private memory pool for good, which they refuse ("live storage
        # ... not accounted for"), so the output is allocated plainly on every call.
        self._device = device
        self._index = device.index if device.index is not None else 0
        self._grid = prepared.grid
        self.through_triton: Counter = Counter()  # why calls went through Triton's binder
        # Whether a caller's `out` was checked against this plan's shape (once: a compiled graph
        # passes buffers of the one layout it allocates; validate.check_out).
        self.out_checked = False

    def _relauncher(self, aligned: bool, mask: int):
        fast = self.fast if aligned else self._masked.get(mask)
        if fast is not None and not fast.hooks_idle():
            return None
        return fast

    def _count_binder_call(self) -> None:
        reason = "a launch hook is installed" if hooks_installed() else "no relauncher for this alignment (yet)"
        self.through_triton[reason] += 1

    def _learn(self, aligned: bool, mask: int, compiled, arg_names) -> None:
        # The kernel Triton just chose is the one every call with this mask gets. A refusal
        # while a profiler's hook is installed is not recorded: the next call tries again.
        if hooks_installed():
            return
        if aligned:
            if self.fast is None and "aligned" not in self._masked:
                self._masked["aligned"] = None  # tried once
                self.fast = CompiledLaunch.create(compiled, arg_names)
        elif mask not in self._masked:
            self._masked[mask] = CompiledLaunch.create(compiled, arg_names)


class HopperPlan(_Plan):
    """A plan on the sm_90 Gluon kernel (:mod:`.triton_fp8_hopper`)."""

    kernel = "gluon-sm90"
    __slots__ = ("_a", "_w", "_c", "_tail", "_hopper", "_fast_accum", "_fallback")

    def __init__(self, config: dict, prepared, device: torch.device, fast_accum: bool = False) -> None:
        from . import triton_fp8_hopper as hopper  # imports Gluon, which older Tritons lack

        super().__init__(config, prepared, device)
        self._a: dict = {}
        self._w: dict = {}
        self._c: dict = {}
        p = prepared
        self._tail = (p.M, p.N, p.K, *p.constexprs)
        self._hopper = hopper
        self._fast_accum = fast_accum
        self._fallback = None  # the portable kernel's config for calls TMA cannot address (built once)

    def __call__(self, A, B, scale_a, scale_b, bias, out=None) -> torch.Tensor:
        a, w, s1, s2 = A.data_ptr(), B.data_ptr(), scale_a.data_ptr(), scale_b.data_ptr()
        b = s2 if bias is None else bias.data_ptr()
        if (a | w) & 15:
            # TMA addresses 16-byte-aligned bases only: this call runs on the portable kernel.
            self.through_triton["A or B not 16-byte aligned (portable kernel)"] += 1
            if self._fallback is None:
                self._fallback = portable.heuristic_config(self.prepared.M, self.prepared.N, self.prepared.K,
                                                           self._fast_accum)
            return into(out, portable.launch(self._fallback, A, B, scale_a, scale_b, bias, torch.bfloat16,
                                             fast_accum=self._fast_accum))
        if out is None:
            out = torch.empty(*self._shape, dtype=torch.bfloat16, device=self._device)
        if not (s1 | s2 | b) & 15:
            aligned, mask = True, 0
        else:
            aligned, mask = False, _mask(s1, s2, b)
        fast = self._relauncher(aligned, mask)
        if fast is None:
            self._count_binder_call()
            compiled = self._hopper.run_prepared(self.prepared, A, B, scale_a, scale_b, bias, out)
            self._learn(aligned, mask, compiled, self._hopper.ARG_NAMES)
            return out
        c = out.data_ptr()
        p = self.prepared
        ad, wd, cd = self._a.get(a), self._w.get(w), self._c.get(c)
        if ad is None or wd is None or cd is None:
            a_desc, w_desc, w2_desc, c_desc, c2_desc = p.descriptors(A, B, out)
            ad = ad or _put(self._a, a, fast.expand_descriptor(0, a_desc))
            # The kernel takes each weight and output descriptor twice in a row (a two-part tile's
            # two boxes; a one-part tile repeats the first): cached as one flattened run per address.
            wd = wd or _put(self._w, w, self._pair(fast, 1, w_desc, w2_desc), WEIGHT_DESCRIPTOR_CACHE_SIZE)
            cd = cd or _put(self._c, c, self._pair(fast, 3, c_desc, c2_desc))
        g = self._grid
        fast.launch_raw(g[0], g[1], g[2], current_stream(self._index), *fast.prefix, *ad, *wd, s1, s2, b, *cd,
                        *self._tail)
        return out

    @staticmethod
    def _pair(fast, index: int, first, second) -> tuple:
        # A one-part tile passes the same descriptor twice: encoded once.
        run = fast.expand_descriptor(index, first)
        return run + (run if second is first else fast.expand_descriptor(index + 1, second))


class PortablePlan(_Plan):
    """A plan on the portable kernel (:mod:`.triton_fp8_gemm`), split-K epilogue included."""

    kernel = "portable"
    __slots__ = ("fast_epilogue", "_masked_epilogue", "_a", "_tail", "_ws_shape", "_epi_tail")

    def __init__(self, config: dict, prepared: portable.Prepared, device: torch.device) -> None:
        super().__init__(config, prepared, device)
        self.fast_epilogue = None
        self._masked_epilogue: dict = {}
        self._a: dict = {}
        p = prepared
        self._tail = (p.M, p.N, p.K, *p.constexprs)
        self._ws_shape = (p.split_k, p.M, p.N)
        self._epi_tail = (p.M, p.N, p.constexprs[0], p.split_k, portable._EPILOGUE_BLOCK)

    def __call__(self, A, B, scale_a, scale_b, bias, out=None) -> torch.Tensor:
        p = self.prepared
        a, w, s1, s2 = A.data_ptr(), B.data_ptr(), scale_a.data_ptr(), scale_b.data_ptr()
        b = s2 if bias is None else bias.data_ptr()
        if p.a_tma and a & 15:  # TMA needs an aligned base: this call only, without the descriptor
            self.through_triton["A not 16-byte aligned (no TMA)"] += 1
            return into(out, portable.launch(self.config, A, B, scale_a, scale_b, bias, torch.bfloat16,
                                              fast_accum=not p.constexprs[9]))
        if out is None:
            out = torch.empty(*self._shape, dtype=torch.bfloat16, device=self._device)
        ws = None if p.split_k == 1 else torch.empty(*self._ws_shape, dtype=torch.float32, device=self._device)
        c = out.data_ptr()
        target = c if ws is None else ws.data_ptr()
        a_ptr = 0 if p.a_tma else a  # a descriptor is not a specialised pointer
        c_epi = 0 if ws is None else c  # the split-K epilogue is specialised on the output too
        aligned = not (a_ptr | w | s1 | s2 | b | target | c_epi) & 15
        mask = 0 if aligned else _mask(a_ptr, w, s1, s2, b, target, c_epi)
        fast = self._relauncher(aligned, mask)
        epilogue = None
        if fast is not None and ws is not None:
            epilogue = self.fast_epilogue if aligned else self._masked_epilogue.get(mask)
            if epilogue is None:
                fast = None
        if fast is None:
            self._count_binder_call()
            main, epi = portable.run_prepared(p, A, B, scale_a, scale_b, bias, out, ws)
            self._learn(aligned, mask, main, portable.ARG_NAMES)
            if epi is not None and not hooks_installed():
                relaunch = CompiledLaunch.create(epi, portable.EPILOGUE_ARG_NAMES)
                if aligned:
                    self.fast_epilogue = self.fast_epilogue or relaunch
                else:
                    self._masked_epilogue.setdefault(mask, relaunch)
            return out
        if p.a_tma:
            a_arg = self._a.get(a)
            if a_arg is None:
                a_arg = _put(self._a, a, fast.expand_descriptor(
                    0, portable.a_descriptor(p, A.view(torch.uint8) if p.upcast else A)))  # as run_prepared
        else:
            a_arg = (a,)
        stream = current_stream(self._index)
        fast(p.grid, stream, (*a_arg, w, s1, s2, b, target, *self._tail))
        if epilogue is not None:
            epilogue(p.epilogue_grid, stream, (target, s1, s2, b, c, *self._epi_tail))
        return out
