"""A recording stand-in for a compiled kernel's C launcher, for CPU tests of the relaunch path."""

from __future__ import annotations

from hipbmm_inductor.ops.triton_launch import CompiledLaunch


class Chain:
    """Triton 3.6's HookChain: a fixed object whose ``calls`` list a profiler appends to."""

    def __init__(self):
        self.calls = []


class Knobs:
    """``triton.knobs`` as the relaunch reads it: ``runtime.launch_enter_hook`` / ``launch_exit_hook``."""

    class runtime:
        launch_enter_hook = Chain()
        launch_exit_hook = Chain()


def recording_launch(seen: list) -> CompiledLaunch:
    """A CompiledLaunch whose C function appends its arguments to ``seen``; descriptors expand to
    ``("desc", base address, *shape, *strides, *box)``."""
    return CompiledLaunch(lambda *a: seen.append(a), function=42, packed_metadata=(4, 1, 0), cooperative=False,
                          pdl=False, knobs=Knobs, expand=lambda desc, meta: ("desc", desc.base.data_ptr(),
                                                                              *desc.shape, *desc.strides,
                                                                              *desc.block_shape),
                          desc_meta=[{}] * 5)
