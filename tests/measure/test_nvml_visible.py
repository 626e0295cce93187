"""CUDA_VISIBLE_DEVICES (indices, UUIDs, MIG UUIDs) and CUDA_DEVICE_ORDER map to the right GPUs."""

from __future__ import annotations

import pytest

from lowcarb.measure.gpu_meter import NvmlMeter
from lowcarb.measure.gpu_visible import visible_gpus
from lowcarb.measure.nvml import MigDevice, NvmlUnavailable, PhysicalGpu, open_nvml

from .fakegpu import TREE, Clock, gpu
from .scripted import tick

H100 = "NVIDIA H100 80GB HBM3"
MIG_A = "MIG-4f2a1b3c-aaaa-5bbb-8ccc-0123456789ab"
MIG_B = "MIG-9e8d7c6b-dddd-5eee-8fff-ba9876543210"


def inventory(names=(H100, H100, H100), bus=("3b", "1b", "86")) -> list[PhysicalGpu]:
    """NVML's order is not bus order here: NVML index 0 sits at bus 3b, index 1 at bus 1b."""
    gpus = []
    for i, (name, b) in enumerate(zip(names, bus, strict=True)):
        migs = ()
        if i == 2:
            migs = (MigDevice(None, MIG_A, 1, 40 << 30), MigDevice(None, MIG_B, 2, 40 << 30))
        uuid = f"GPU-{i}{i}{i}{i}aaaa-1111-2222-3333-44445555666{i}"
        gpus.append(PhysicalGpu(i, None, uuid, name, f"00000000:{b}:00.0", 80 << 30, migs))
    return gpus


def chosen(env, gpus=None) -> list[int]:
    return [g.nvml_index for g in visible_gpus(gpus or inventory(), env).gpus]


def test_unset_is_every_gpu_and_empty_is_none():
    assert sorted(chosen({})) == [0, 1, 2]
    assert chosen({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert chosen({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_indices_count_in_pci_bus_order():
    # bus order: 1b (NVML 1), 3b (NVML 0), 86 (NVML 2)
    env = {"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert chosen(env) == [1]
    assert chosen({**env, "CUDA_VISIBLE_DEVICES": "2,0"}) == [2, 1]


def test_fastest_first_on_identical_gpus_is_pci_bus_order():
    assert chosen({"CUDA_VISIBLE_DEVICES": "0"}) == [1]
    assert chosen({"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "FASTEST_FIRST"}) == [0]


def test_fastest_first_on_mixed_gpus_looks_at_every_gpu_and_says_why():
    gpus = inventory(names=(H100, "NVIDIA A100-SXM4-80GB", H100))
    vis = visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "0"})
    assert len(vis.gpus) == 3
    assert "FASTEST_FIRST" in vis.note and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in vis.note
    # PCI_BUS_ID, or UUIDs, are exact on the same machine
    assert chosen({"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, gpus) == [1]
    assert chosen({"CUDA_VISIBLE_DEVICES": gpus[2].uuid}, gpus) == [2]


def test_uuids_full_and_abbreviated():
    gpus = inventory()
    assert chosen({"CUDA_VISIBLE_DEVICES": gpus[2].uuid}) == [2]
    assert chosen({"CUDA_VISIBLE_DEVICES": "GPU-1111"}) == [1]
    assert chosen({"CUDA_VISIBLE_DEVICES": f"GPU-0000,{gpus[1].uuid}"}) == [0, 1]
    assert chosen({"CUDA_VISIBLE_DEVICES": "GPU-"}) == []  # ambiguous prefix names no device


def test_mig_uuids_map_to_their_gpu():
    assert chosen({"CUDA_VISIBLE_DEVICES": MIG_B}) == [2]
    assert chosen({"CUDA_VISIBLE_DEVICES": "MIG-4f2a"}) == [2]
    legacy = "MIG-GPU-2222aaaa-1111-2222-3333-444455556662/1/0"  # before driver R470
    assert chosen({"CUDA_VISIBLE_DEVICES": legacy}) == [2]
    assert chosen({"CUDA_VISIBLE_DEVICES": legacy.replace("/1/", "/7/")}) == []  # no instance 7
    assert chosen({"CUDA_VISIBLE_DEVICES": f"{MIG_A},{MIG_B}"}) == [2]  # one GPU, metered once


def test_the_list_ends_at_the_first_entry_that_names_no_device():
    env = {"CUDA_VISIBLE_DEVICES": "0,2,-1,1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert chosen(env) == [1, 2]
    assert chosen({"CUDA_VISIBLE_DEVICES": "1,GPU-ffff,0"}) == [0]
    assert chosen({"CUDA_VISIBLE_DEVICES": "7"}) == []


def test_uuid_selection_through_nvml(fake_nvml, monkeypatch):
    clock = Clock()
    fake_nvml.configure(
        [gpu(0, processes={TREE: 50}), gpu(1, power_w=300.0, processes={TREE: 50})], clock=clock
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-00000001")  # abbreviated UUID of GPU 1
    meter = NvmlMeter(open_nvml())
    meter.start(tick(0.0, pids={TREE}))
    clock.t = 2.0
    out = meter.stop(tick(2.0, pids={TREE}))["gpu"]
    assert out.energy_j == pytest.approx(600.0)  # GPU 1 only: 300 W x 2 s
    assert "CUDA_VISIBLE_DEVICES=GPU-00000001 -> GPU 1" in out.detail


def test_mig_selection_through_nvml_meters_the_parent(fake_nvml, monkeypatch):
    clock = Clock()
    migs = [{"uuid": MIG_A, "gi": 1, "memory_mib": 40000, "processes": {TREE: 50}}]
    fake_nvml.configure([gpu(0), gpu(1, memory_mib=80000, migs=migs)], clock=clock)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", MIG_A)
    meter = NvmlMeter(open_nvml())
    meter.start(tick(0.0, pids={TREE}))
    clock.t = 2.0
    out = meter.stop(tick(2.0, pids={TREE}))["gpu"]
    assert out.energy_j == pytest.approx(0.5 * 200.0 * 2.0)  # its half of GPU 1
    assert "-> GPU 1" in out.detail


def test_a_visible_list_naming_no_gpu_means_no_gpu_meter(fake_nvml, monkeypatch):
    fake_nvml.configure([gpu(0)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-ffffffff")
    with pytest.raises(NvmlUnavailable, match="GPU-ffffffff -> no GPU"):
        NvmlMeter(open_nvml())
