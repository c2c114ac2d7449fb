"""Shared test configuration: hypothesis profiles and small input builders.

Hypothesis profiles (choose with ``HIPBMM_HYPOTHESIS_PROFILE`` or ``--hypothesis-profile``):
``ci`` runs a modest number of examples per property (the default, what CI runs), ``dev`` a few
hundred, ``deep`` at least 10,000 per property for fuzzing sessions, e.g.::

    HIPBMM_HYPOTHESIS_PROFILE=deep python -m pytest tests/ops -q
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, settings

from hipbmm_inductor import envs

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=40, derandomize=True, **_common)
settings.register_profile("dev", max_examples=300, **_common)
settings.register_profile("deep", max_examples=10_000, **_common)
settings.load_profile(envs.HIPBMM_HYPOTHESIS_PROFILE)


@pytest.fixture(autouse=True)
def _fresh_backend_selection():
    """Each test starts from the environment's backend setting, whatever the last one chose."""
    from hipbmm_inductor.ops import registry

    registry.set_backend(None)
    yield
    registry.set_backend(None)


def has_gpu() -> bool:
    return torch.cuda.is_available()
