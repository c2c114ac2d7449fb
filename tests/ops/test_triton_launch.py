"""The binder-free relaunch (:mod:`hipbmm_inductor.ops.triton_launch`), on the CPU.

How :class:`CompiledLaunch` finds Triton's C launcher and lays out its arguments (against a
recording stand-in for the C function), when it refuses to build, and how it watches profiler
hooks. The relaunch against real kernels is in ``test_triton_plan_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
L = pytest.importorskip("hipbmm_inductor.ops.triton_launch")
T = pytest.importorskip("hipbmm_inductor.ops.triton_fp8_gemm")
from tests.support.launch_fakes import Knobs, recording_launch  # noqa: E402


# ---------------------------------------------------------------------------------------------
# CPU: the launcher's plumbing
# ---------------------------------------------------------------------------------------------


def test_raw_launcher_found_directly_and_inside_triton_wrapper():
    class Runner:
        launch = len  # a builtin: Triton calls the C function directly when no descriptors

    assert L._raw_launcher(Runner()) is len

    def wrap(launcher):  # the shape of Triton's wrap_handle_tensordesc
        def inner(*args):
            return launcher(*args)
        return inner

    class Wrapped:
        launch = staticmethod(wrap(len))

    assert L._raw_launcher(Wrapped()) is len

    class Unknown:
        launch = staticmethod(lambda *a: None)

    assert L._raw_launcher(Unknown()) is None
    assert L._raw_launcher(object()) is None


def test_create_refuses_what_it_cannot_launch_exactly():
    assert L.CompiledLaunch.create(None, T.ARG_NAMES) is None  # the interpreter returns no kernel

    class Fn:
        arg_names = ["x", "y"]

    class Src:
        fn = Fn()

    class Compiled:
        src = Src()

    assert L.CompiledLaunch.create(Compiled(), T.ARG_NAMES) is None  # another kernel's signature


def test_hooks_idle_reads_both_hook_styles():
    class Chain:
        def __init__(self, calls):
            self.calls = calls

    class Knobs:
        class runtime:
            launch_enter_hook = Chain([])
            launch_exit_hook = None

    assert L._hooks_idle(Knobs)
    Knobs.runtime.launch_enter_hook = Chain([print])
    assert not L._hooks_idle(Knobs)
    Knobs.runtime.launch_enter_hook = print  # an older Triton: a plain callable
    assert not L._hooks_idle(Knobs)


def test_call_layout_matches_tritons_c_launcher():
    """Triton's CudaLauncher calls ``launch(gx, gy, gz, stream, function, cooperative, pdl,
    global_scratch, profile_scratch, packed_metadata, launch_metadata, enter_hook, exit_hook,
    *kernel_args)`` (driver._BASE_ARGS_FORMAT "iiiKKppOOOOOO")."""
    seen = []

    class Knobs:
        class runtime:
            launch_enter_hook = None
            launch_exit_hook = None

    launch = L.CompiledLaunch(lambda *a: seen.append(a), function=1234, packed_metadata=(4, 1, 0), cooperative=False,
                              pdl=True, knobs=Knobs, expand=None, desc_meta=[])
    launch((7, 2, 1), 99, (10, 11, "constexpr"))
    expected = (7, 2, 1, 99, 1234, False, True, None, None, (4, 1, 0), None, None, None, 10, 11, "constexpr")
    assert seen == [expected]
    launch.launch_raw(7, 2, 1, 99, *launch.prefix, 10, 11, "constexpr")  # what the plans call
    assert seen[1] == expected
    assert launch.hook_lists is None and launch.hooks_idle()  # this Knobs has no hook chains
    assert len(L._BASE_ARGS_FORMAT) == 13 and L._BASE_ARGS_FORMAT.startswith("iiiKK")


def test_expand_descriptor_keeps_no_tensor_alive():
    t = torch.zeros(4)

    class Knobs:
        class runtime:
            launch_enter_hook = None
            launch_exit_hook = None

    launch = L.CompiledLaunch(print, 0, (), False, False, Knobs, expand=lambda desc, meta: [desc, 3, meta],
                              desc_meta=[{"swizzle": 128}])
    out = launch.expand_descriptor(0, t)
    assert out == (t.data_ptr(), 3, {"swizzle": 128})
    assert launch.expand_descriptor(5, t)[2] is None  # a descriptor Triton kept no metadata for


def test_a_replaced_hook_chain_is_seen():
    """A profiler may assign the knob instead of adding to its chain: relaunches must notice."""
    launch = recording_launch([])
    assert launch.hooks_idle()
    original = Knobs.runtime.launch_enter_hook
    try:
        Knobs.runtime.launch_enter_hook = print
        assert not launch.hooks_idle()
    finally:
        Knobs.runtime.launch_enter_hook = original
    original.calls.append(print)
    try:
        assert not launch.hooks_idle()
    finally:
        original.calls.clear()
    assert launch.hooks_idle()


def test_no_binder_free_launch_on_rocm(monkeypatch):
    monkeypatch.setattr(torch.version, "hip", "6.4.0")
    assert L.CompiledLaunch.create(object(), T.ARG_NAMES) is None


def test_create_never_raises():
    class Weird:
        @property
        def src(self):
            raise RuntimeError("a runtime this module does not know")

    assert L.CompiledLaunch.create(Weird(), T.ARG_NAMES) is None
