"""Forwarding HIP_ONLINE_TUNING to aiter/hipBLASLt only when asked, and telling listeners."""

from __future__ import annotations

import os

import pytest

from hipbmm_inductor import envs
from hipbmm_inductor.tuning import rocm_online


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for name in ("HIP_ONLINE_TUNING", "HIPBMM_HIP_ONLINE_TUNING"):
        # setenv first: monkeypatch restores only what it recorded, and forwarding writes
        # HIP_ONLINE_TUNING itself.
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)
    monkeypatch.setattr(rocm_online, "_listeners", [])
    yield
    envs.set_override("HIPBMM_HIP_ONLINE_TUNING", None)


def test_off_by_default():
    assert rocm_online.forward_hip_online_tuning() is False
    assert "HIP_ONLINE_TUNING" not in os.environ


def test_env_request_forwards(monkeypatch):
    monkeypatch.setenv("HIPBMM_HIP_ONLINE_TUNING", "1")
    assert rocm_online.forward_hip_online_tuning() is True
    assert os.environ["HIP_ONLINE_TUNING"] == "1"


def test_python_request_forwards():
    assert rocm_online.enable_vendor_online_tuning() is True
    assert os.environ["HIP_ONLINE_TUNING"] == "1"


@pytest.mark.parametrize("user_value,expected", [("0", False), ("1", True)])
def test_users_own_value_respected(monkeypatch, user_value, expected):
    monkeypatch.setenv("HIP_ONLINE_TUNING", user_value)
    monkeypatch.setenv("HIPBMM_HIP_ONLINE_TUNING", "1")
    assert rocm_online.forward_hip_online_tuning() is expected
    assert os.environ["HIP_ONLINE_TUNING"] == user_value


def test_listeners_hear_of_each_write_only():
    # The aiter backend listens: its launch plans snapshot HIP_ONLINE_TUNING.
    heard = []
    rocm_online.add_listener(lambda: heard.append("a"))
    assert rocm_online.forward_hip_online_tuning() is False  # nothing written, nothing heard
    assert heard == []
    rocm_online.enable_vendor_online_tuning()
    assert heard == ["a"]


def test_listener_added_once():
    heard = []

    def listener():
        heard.append(1)

    rocm_online.add_listener(listener)
    rocm_online.add_listener(listener)
    rocm_online.enable_vendor_online_tuning()
    assert heard == [1]
