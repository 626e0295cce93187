"""NVML through a fake `pynvml` module: a GPU with an energy counter and a power-only GPU."""

from __future__ import annotations

import sys
import types

import pytest

from lowcarb.measure import CarbonConfig, track
from lowcarb.measure.nvml import NvmlMeter, NvmlUnavailable, open_nvml
from lowcarb.measure.tracker import select_meters

from .scripted import ScriptedProbes, tick


class FakeNVMLError(Exception):
    pass


def fake_pynvml(clock: dict[str, float], *, count: int = 2) -> types.ModuleType:
    """Device 0: counter of 100 W x t (in mJ). Device 1: no counter, power 50 + 10 t W (in mW)."""
    m = types.ModuleType("pynvml")
    m.NVMLError = FakeNVMLError
    m.calls = {"init": 0, "shutdown": 0}

    def init():
        m.calls["init"] += 1

    def shutdown():
        m.calls["shutdown"] += 1

    def energy(h):
        if h == 1:
            raise FakeNVMLError("Not Supported")
        return int(1_000_000 + 100.0 * clock["t"] * 1000)

    def power(h):
        return int((50.0 + 10.0 * clock["t"]) * 1000)

    m.nvmlInit = init
    m.nvmlShutdown = shutdown
    m.nvmlDeviceGetCount = lambda: count
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetPowerUsage = power
    return m


def test_counter_and_power_only_devices(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(clock))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = NvmlMeter(open_nvml())
    meter.start(tick(0.0))
    for t in (1.0, 2.0, 3.5):
        clock["t"] = t
        meter.sample(tick(t))
    clock["t"] = 4.0  # the final partial interval
    out = meter.stop(tick(4.0))
    # counter: 100 W x 4 s = 400 J; power-only: integral of 50 + 10 t over [0, 4] = 280 J
    assert out["gpu"].energy_j == pytest.approx(400.0 + 280.0)
    assert out["gpu"].method == "measured: nvml"
    assert "energy counter x1" in out["gpu"].detail and "power samples x1" in out["gpu"].detail


def test_cuda_visible_devices_selects(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(clock))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    meter = NvmlMeter(open_nvml())
    meter.start(tick(0.0))
    clock["t"] = 2.0
    assert meter.stop(tick(2.0))["gpu"].energy_j == pytest.approx(200.0)


def test_missing_module_or_no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    with pytest.raises(NvmlUnavailable, match="not installed"):
        open_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml({"t": 0.0}, count=0))
    with pytest.raises(NvmlUnavailable, match="no visible"):
        open_nvml()


def test_window_reports_gpu_component(monkeypatch, tmp_path):
    clock = {"t": 0.0}
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(clock, count=1))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    config = CarbonConfig(powercap_root=str(tmp_path), sample_interval_s=60)
    probes = ScriptedProbes(step_s=3.0)
    with track("gpu", config=config, probes=probes, meters=select_meters(config)) as fp:
        clock["t"] = 3.0
    assert fp.components["gpu"].energy_j == pytest.approx(300.0)
    assert set(fp.components) == {"cpu", "gpu", "ram"}
