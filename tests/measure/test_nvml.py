"""NVML through the scripted `pynvml`: energy by counter or power samples, one session per process."""

from __future__ import annotations

import sys

import pytest

from lowcarb.measure import CarbonConfig, track
from lowcarb.measure.gpu_meter import NvmlMeter
from lowcarb.measure.nvml import NvmlUnavailable, close_nvml, open_nvml
from lowcarb.measure.tracker import select_meters

from .fakegpu import TREE, Clock, gpu
from .scripted import ScriptedProbes, tick


def two_gpus(fake, clock):
    """Device 0: counter of 100 W x t. Device 1: no counter, power 50 + 10 t W. TREE alone on both."""
    fake.configure(
        [
            gpu(0, energy_j=lambda t: 100.0 * t, power_w=100.0, processes={TREE: 40}),
            gpu(1, counter=False, power_w=lambda t: 50.0 + 10.0 * t, processes={TREE: 40}),
        ],
        clock=clock,
    )


def test_counter_and_power_only_devices(fake_nvml):
    clock = Clock()
    two_gpus(fake_nvml, clock)
    meter = NvmlMeter(open_nvml())
    meter.start(tick(0.0, pids={TREE}))
    for t in (1.0, 2.0, 3.5):
        clock.t = t
        meter.sample(tick(t, pids={TREE}))
    clock.t = 4.0  # the final partial interval
    out = meter.stop(tick(4.0, pids={TREE}))
    # counter: 100 W x 4 s = 400 J; power-only: integral of 50 + 10 t over [0, 4] = 280 J
    assert out["gpu"].energy_j == pytest.approx(400.0 + 280.0)
    assert out["gpu"].method == "measured: nvml, share by SM utilisation"
    assert "by energy counter" in out["gpu"].detail and "by power samples" in out["gpu"].detail
    assert out["gpu"].incomplete == ""


def test_cuda_visible_devices_selects(fake_nvml, monkeypatch):
    clock = Clock()
    two_gpus(fake_nvml, clock)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    meter = NvmlMeter(open_nvml())
    meter.start(tick(0.0, pids={TREE}))
    clock.t = 2.0
    assert meter.stop(tick(2.0, pids={TREE}))["gpu"].energy_j == pytest.approx(200.0)


def test_missing_module_or_no_gpu(fake_nvml, monkeypatch):
    close_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    with pytest.raises(NvmlUnavailable, match="not installed"):
        open_nvml()
    close_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml)
    fake_nvml.configure([])
    with pytest.raises(NvmlUnavailable, match="no visible"):
        open_nvml()


def test_cuda_visible_devices_empty_hides_every_gpu(fake_nvml, monkeypatch):
    fake_nvml.configure([gpu(0)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(NvmlUnavailable, match="no GPU"):
        NvmlMeter(open_nvml())
    # select_meters then adds no gpu component at all, as on a machine without GPUs
    config = CarbonConfig(powercap_root="/nonexistent")
    assert not any(isinstance(m, NvmlMeter) for m in select_meters(config))


def test_window_reports_gpu_component(fake_nvml, tmp_path):
    clock = Clock()
    fake_nvml.configure([gpu(0, power_w=100.0, processes={TREE: 50})], clock=clock)
    config = CarbonConfig(powercap_root=str(tmp_path), sample_interval_s=60)
    probes = ScriptedProbes(step_s=3.0, tree_pids={TREE})
    with track("gpu", config=config, probes=probes, meters=select_meters(config)) as fp:
        clock.t = 3.0
    assert fp.components["gpu"].energy_j == pytest.approx(300.0)
    assert set(fp.components) == {"cpu", "gpu", "ram"}


def test_one_nvml_session_for_every_window(fake_nvml, tmp_path):
    fake_nvml.configure([gpu(0, processes={TREE: 50})])
    config = CarbonConfig(powercap_root=str(tmp_path), sample_interval_s=0.01)
    for _ in range(3):
        with (
            track("outer", config=config, probes=ScriptedProbes(tree_pids={TREE})),
            track("inner", config=config, probes=ScriptedProbes(tree_pids={TREE})),
        ):
            pass
    assert fake_nvml.CALLS["nvmlInit"] == 1
    assert fake_nvml.CALLS["nvmlDeviceGetCount"] == 1  # the inventory is read once too
    assert fake_nvml.CALLS.get("nvmlShutdown", 0) == 0  # shut down at exit, not per window
    close_nvml()
    assert fake_nvml.CALLS["nvmlShutdown"] == 1


def test_a_failed_init_is_not_retried_at_every_window(fake_nvml):
    fake_nvml.configure([gpu(0)])
    fake_nvml.FAIL["nvmlInit"] = fake_nvml.NVML_ERROR_DRIVER_NOT_LOADED
    for _ in range(3):
        with pytest.raises(NvmlUnavailable, match="Driver Not Loaded"):
            open_nvml()
    assert fake_nvml.CALLS["nvmlInit"] == 1


def test_inventory_reads_names_bus_ids_and_mig_instances(fake_nvml):
    fake_nvml.configure(
        [
            gpu(0, bus_id="00000000:3B:00.0"),
            gpu(1, name="NVIDIA A100-SXM4-80GB", migs=[
                {"uuid": "MIG-11111111-2222-3333-4444-555555555555", "gi": 1, "memory_mib": 40192},
                {"uuid": "MIG-66666666-7777-8888-9999-000000000000", "gi": 2, "memory_mib": 40192},
            ]),
        ]
    )
    session = open_nvml()
    g0, g1 = session.gpus
    assert (g0.name, g0.pci_bus_id, g0.migs) == ("NVIDIA H100 80GB HBM3", "00000000:3b:00.0", ())
    assert [m.gpu_instance_id for m in g1.migs] == [1, 2]
    assert g1.migs[0].memory_bytes == 40192 * 2**20
    assert g0.label.startswith("GPU 0 NVIDIA H100 80GB HBM3 (GPU-00000000")
