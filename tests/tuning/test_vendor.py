"""Forwarding HIP_ONLINE_TUNING to aiter/hipBLASLt only when asked."""

from __future__ import annotations

import logging
import os

import pytest

from hipbmm_inductor import envs
from hipbmm_inductor.tuning import vendor


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("HIP_ONLINE_TUNING", raising=False)
    monkeypatch.setattr(vendor, "_state", {"hipblaslt_initialised": False, "warned_late": False})
    yield
    envs.set_override("HIPBMM_HIP_ONLINE_TUNING", None)


def test_off_by_default():
    assert vendor.forward_hip_online_tuning() is False
    assert "HIP_ONLINE_TUNING" not in os.environ


def test_env_request_forwards(monkeypatch):
    monkeypatch.setenv("HIPBMM_HIP_ONLINE_TUNING", "1")
    assert vendor.forward_hip_online_tuning() is True
    assert os.environ["HIP_ONLINE_TUNING"] == "1"


def test_python_request_forwards():
    assert vendor.enable_vendor_online_tuning() is True
    assert os.environ["HIP_ONLINE_TUNING"] == "1"


@pytest.mark.parametrize("user_value,expected", [("0", False), ("1", True)])
def test_users_own_value_respected(monkeypatch, user_value, expected):
    monkeypatch.setenv("HIP_ONLINE_TUNING", user_value)
    monkeypatch.setenv("HIPBMM_HIP_ONLINE_TUNING", "1")
    assert vendor.forward_hip_online_tuning() is expected
    assert os.environ["HIP_ONLINE_TUNING"] == user_value


def test_too_late_warns_once(monkeypatch, caplog):
    vendor.note_hipblaslt_initialised()
    monkeypatch.setenv("HIPBMM_HIP_ONLINE_TUNING", "1")
    with caplog.at_level(logging.WARNING, logger="hipbmm_inductor"):
        vendor.forward_hip_online_tuning()
        monkeypatch.delenv("HIP_ONLINE_TUNING")
        vendor.forward_hip_online_tuning()
    assert sum("after hipBLASLt initialised" in r.getMessage() for r in caplog.records) == 1
