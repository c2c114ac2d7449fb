"""Waiting for GPU work in a test without hanging the test run.

A kernel whose pipeline waits for a stage nobody issues never returns, and a plain
``torch.cuda.synchronize()`` (or any copy to the host) then blocks the whole run with no
message. :func:`finished_or_fail` polls an event on the current stream instead and fails the
test, naming what was launched, once the deadline passes.
"""

from __future__ import annotations

import time

import pytest
import torch


def finished_or_fail(what: str, timeout_s: float = 60.0, poll_s: float = 0.005) -> None:
    """Return once the work queued so far on the current CUDA stream has finished; fail the test
    if it has not after ``timeout_s`` seconds (the kernel is still running then, so the GPU
    tests after this one will fail too: the message says so)."""
    done = torch.cuda.Event()
    done.record()
    deadline = time.monotonic() + timeout_s
    while not done.query():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: the GPU work did not finish within {timeout_s:g} s: a kernel waits forever "
                        "(a pipeline stage that is never issued?); it still holds the GPU, so later GPU tests "
                        "will fail as well", pytrace=False)
        time.sleep(poll_s)
