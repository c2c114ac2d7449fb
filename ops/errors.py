"""Exception types shared by the op, the backends and the passes."""

from __future__ import annotations

__all__ = ["HipbmmInputError", "BackendUnavailableError"]


class HipbmmInputError(ValueError):
    """An argument breaks the ``hipb_mm_fp8`` contract.

    The message names the argument, the rule and the value seen. Fake (meta) and real
    execution raise this same type with the same text, because both run one validation routine.
    Inside ``torch.compile`` the fake implementation raises it while Dynamo traces, and Dynamo
    re-raises it as its own ``TorchRuntimeError`` carrying this message.
    """


class BackendUnavailableError(RuntimeError):
    """A backend the user asked for by name cannot run here; the message says why."""
