"""The scripted `pynvml` (tests/measure/fake_nvml/pynvml.py) as a fixture, and GPU specs for it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from lowcarb.measure.nvml import close_nvml

FAKE_DIR = Path(__file__).resolve().parent / "fake_nvml"
TREE = 4242  # the tracked process in scripted ticks
OTHER = 999  # another user's process


class Clock:
    """The fake GPUs' clock, seconds; tests move it together with their scripted ticks."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def load_fake() -> ModuleType:
    """A fresh copy of the fake module (its state is module-level)."""
    spec = importlib.util.spec_from_file_location("pynvml", FAKE_DIR / "pynvml.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_nvml(monkeypatch):
    """The fake installed as `pynvml`, a fresh NVML session, CUDA_* variables unset."""
    close_nvml()
    module = load_fake()
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    yield module
    close_nvml()


def gpu(i: int, **spec: Any) -> dict[str, Any]:
    """A GPU spec: an H100 at 200 W with an energy counter and per-process samples."""
    base: dict[str, Any] = {
        "uuid": f"GPU-{i:08x}-aaaa-bbbb-cccc-{i:012x}",
        "name": "NVIDIA H100 80GB HBM3",
        "bus_id": f"00000000:{0x1B + i:02X}:00.0",
        "memory_mib": 81559,
        "power_w": 200.0,
        "counter": True,
        "utilization": "info",
        "processes": {},
    }
    base.update(spec)
    return base
