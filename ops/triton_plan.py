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

Anything a plan cannot vouch for goes through Triton's own launch path, with the same result:
an address that is not 16-byte aligned (Triton specialised the kernel on aligned pointers), a
launch hook (a profiler), a runtime whose launcher this package does not know, the interpreter.
"""

from __future__ import annotations

import torch

from . import triton_fp8_gemm as portable
from .triton_launch import CompiledLaunch, current_stream

__all__ = ["HopperPlan", "PortablePlan", "DESCRIPTOR_CACHE_SIZE"]

# Encoded TMA descriptors kept per plan and operand. The caching allocator hands the same few
# addresses out step after step, so a handful are live at a time; past this many the cache is
# dropped and refilled (a miss costs one encode, ~5 us).
DESCRIPTOR_CACHE_SIZE = 64


def _template(shape: tuple, device: torch.device) -> torch.Tensor:
    """A 2-byte bf16 tensor expanded to ``shape``: ``torch.empty_like`` of it is a fresh contiguous
    ``shape`` tensor and takes ~40% less host time than ``torch.empty(shape, dtype=, device=)``
    (no keyword parsing; ``benchmarks/results/h200/host_cost.json``, breakdown)."""
    return torch.empty((1, 1), dtype=torch.bfloat16, device=device).expand(shape)


def _put(cache: dict, key: int, value: tuple) -> tuple:
    if len(cache) >= DESCRIPTOR_CACHE_SIZE:
        cache.clear()
    cache[key] = value
    return value


class HopperPlan:
    """A plan on the sm_90 Gluon kernel (:mod:`.triton_fp8_hopper`)."""

    kernel = "gluon-sm90"
    __slots__ = ("config", "prepared", "fast", "_tried", "_a", "_w", "_c", "_tail", "_shape", "_hopper", "_like")

    def __init__(self, config: dict, prepared) -> None:
        from . import triton_fp8_hopper as hopper

        self.config = config
        self.prepared = prepared
        self.fast = None
        self._tried = False
        self._a: dict = {}
        self._w: dict = {}
        self._c: dict = {}
        p = prepared
        self._tail = (p.M, p.N, p.K, *p.constexprs)
        self._shape = (p.M, p.N)
        self._hopper = hopper
        self._like = None

    def __call__(self, A, B, scale_a, scale_b, bias) -> torch.Tensor:
        a, w, s1, s2 = A.data_ptr(), B.data_ptr(), scale_a.data_ptr(), scale_b.data_ptr()
        b = s2 if bias is None else bias.data_ptr()
        like = self._like
        if like is None or like.device != A.device:
            like = self._like = _template(self._shape, A.device)
        out = torch.empty_like(like)
        fast = self.fast
        if fast is None or (a | w | s1 | s2 | b) & 15 or not fast.hooks_idle():
            return self._through_triton(A, B, scale_a, scale_b, bias, out, a | w | s1 | s2 | b)
        c = out.data_ptr()
        p = self.prepared
        ad, wd, cd = self._a.get(a), self._w.get(w), self._c.get(c)
        if ad is None or wd is None or cd is None:
            a_desc, w_desc, c_desc = p.descriptors(A, B, out)
            ad = ad or _put(self._a, a, fast.expand_descriptor(0, a_desc))
            wd = wd or _put(self._w, w, fast.expand_descriptor(1, w_desc))
            cd = cd or _put(self._c, c, fast.expand_descriptor(2, c_desc))
        fast(p.grid, current_stream(out.device.index), (*ad, *wd, s1, s2, b, *cd, *self._tail))
        return out

    def _through_triton(self, A, B, scale_a, scale_b, bias, out, ptrs: int) -> torch.Tensor:
        compiled = self._hopper.run_prepared(self.prepared, A, B, scale_a, scale_b, bias, out)
        if not self._tried and ptrs % 16 == 0:
            # Built from a call whose pointers were aligned: the kernel Triton chose for it is
            # the one every aligned call gets.
            self._tried = True
            self.fast = CompiledLaunch.create(compiled, self._hopper.ARG_NAMES)
        return out


class PortablePlan:
    """A plan on the portable kernel (:mod:`.triton_fp8_gemm`), split-K epilogue included."""

    kernel = "portable"
    __slots__ = ("config", "prepared", "fast", "fast_epilogue", "_tried", "_a", "_tail", "_shape", "_ws_shape",
                 "_epi_tail", "_like")

    def __init__(self, config: dict, prepared: portable.Prepared) -> None:
        self.config = config
        self.prepared = prepared
        self.fast = None
        self.fast_epilogue = None
        self._tried = False
        self._a: dict = {}
        p = prepared
        self._tail = (p.M, p.N, p.K, *p.constexprs)
        self._shape = (p.M, p.N)
        self._ws_shape = (p.split_k, p.M, p.N)
        self._epi_tail = (p.M, p.N, p.constexprs[0], p.split_k, portable._EPILOGUE_BLOCK)
        self._like = None

    def __call__(self, A, B, scale_a, scale_b, bias) -> torch.Tensor:
        p = self.prepared
        a, w, s1, s2 = A.data_ptr(), B.data_ptr(), scale_a.data_ptr(), scale_b.data_ptr()
        b = s2 if bias is None else bias.data_ptr()
        like = self._like
        if like is None or like.device != A.device:
            like = self._like = _template(self._shape, A.device)
        out = torch.empty_like(like)
        ws = None if p.split_k == 1 else torch.empty(self._ws_shape, dtype=torch.float32, device=A.device)
        fast = self.fast
        c = out.data_ptr()
        target = c if ws is None else ws.data_ptr()
        ptrs = a | w | s1 | s2 | b | target
        if fast is None or ptrs & 15 or not fast.hooks_idle() or (ws is not None and self.fast_epilogue is None):
            return self._through_triton(A, B, scale_a, scale_b, bias, out, ws, ptrs)
        if p.a_tma:
            a_arg = self._a.get(a)
            if a_arg is None:
                a_arg = _put(self._a, a, fast.expand_descriptor(0, portable.a_descriptor(p, A)))
        else:
            a_arg = (a,)
        stream = current_stream(out.device.index)
        fast(p.grid, stream, (*a_arg, w, s1, s2, b, target, *self._tail))
        if ws is not None:
            self.fast_epilogue(p.epilogue_grid, stream, (target, s1, s2, b, c, *self._epi_tail))
        return out

    def _through_triton(self, A, B, scale_a, scale_b, bias, out, ws, ptrs: int) -> torch.Tensor:
        p = self.prepared
        if p.a_tma and A.data_ptr() % 16 != 0:  # TMA needs an aligned base: this call only, unplanned
            return portable.launch(self.config, A, B, scale_a, scale_b, bias, torch.bfloat16,
                                   fast_accum=not p.constexprs[9])
        main, epilogue = portable.run_prepared(p, A, B, scale_a, scale_b, bias, out, ws)
        if not self._tried and ptrs % 16 == 0:
            self._tried = True
            self.fast = CompiledLaunch.create(main, portable.ARG_NAMES)
            if epilogue is not None:
                self.fast_epilogue = CompiledLaunch.create(epilogue, portable.EPILOGUE_ARG_NAMES)
                if self.fast_epilogue is None:
                    self.fast = None  # both kernels relaunch the same way, or neither
        return out
