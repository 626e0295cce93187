"""Each job is charged its own share of a GPU: SM utilisation, compute processes, MIG, NVML errors."""

from __future__ import annotations

import pytest

from lowcarb.measure import CarbonConfig, track
from lowcarb.measure.gpu_meter import NvmlMeter
from lowcarb.measure.gpu_share import IDLE, PROCESSES, SM, UNHELD, interval_share, mig_share
from lowcarb.measure.nvml import open_nvml

from .fakegpu import OTHER, TREE, Clock, gpu
from .scripted import ScriptedProbes, tick

GPU_J = 200.0 * 4.0  # every scripted GPU draws 200 W; windows last 4 s


def metered(fake, specs, *, until=4.0, pids=(TREE,), during=None):
    """(meter, gpu ComponentEnergy) over [0, until] s, one tick a second; during(fake, t) runs
    before each tick's readings (to start or stop processes, or to break NVML)."""
    clock = Clock()
    fake.configure(specs, clock=clock)
    meter = NvmlMeter(open_nvml())
    meter.start(tick(0.0, pids=set(pids)))
    for t in [float(s) for s in range(1, int(until))] + [until]:
        clock.t = t
        if during is not None:
            during(fake, t)
        if t < until:
            meter.sample(tick(t, pids=set(pids)))
    return meter, meter.stop(tick(until, pids=set(pids)))["gpu"]


# -- the share of one interval ------------------------------------------------------------------
def test_interval_share_rules():
    assert interval_share({1}, {1: 30.0, 2: 90.0}, {1, 2}) == (0.25, SM)
    assert interval_share({1}, {2: 90.0}, {1, 2}) == (0.0, SM)  # holds a context, runs nothing
    assert interval_share({1}, {}, {1, 2}) == (0.5, IDLE)  # idle GPU: equal among contexts
    assert interval_share({1}, None, {1, 2, 3}) == (pytest.approx(1 / 3), PROCESSES)
    assert interval_share({1}, {}, set()) == (0.0, UNHELD)
    assert mig_share({1}, [(0.5, {1}), (0.25, {2, 3})]) == (0.5, "mig")
    assert mig_share({1}, [(0.5, set())]) == (0.0, UNHELD)


# -- the claims of the issue --------------------------------------------------------------------
def test_a_tree_that_runs_nothing_on_the_gpu_is_charged_nothing(fake_nvml):
    _, gpu_e = metered(fake_nvml, [gpu(0, processes={OTHER: 90})])
    assert gpu_e.energy_j <= 0.05 * GPU_J
    assert gpu_e.energy_j == 0.0
    assert "ran nothing on it (1 other process(es) did)" in gpu_e.detail
    assert f"0 J of {GPU_J:.1f} J" in gpu_e.detail


def test_the_sole_user_gets_the_gpus_energy(fake_nvml):
    _, gpu_e = metered(fake_nvml, [gpu(0, processes={TREE: 60})])
    assert gpu_e.energy_j >= 0.9 * GPU_J
    assert gpu_e.energy_j == pytest.approx(GPU_J)
    assert gpu_e.method == "measured: nvml, share by SM utilisation"


def test_two_equal_users_get_about_half_each(fake_nvml):
    _, gpu_e = metered(fake_nvml, [gpu(0, processes={TREE: 45, OTHER: 45})])
    assert gpu_e.energy_j == pytest.approx(GPU_J / 2, rel=0.05)


def test_unequal_users_by_sm_utilisation(fake_nvml):
    _, gpu_e = metered(fake_nvml, [gpu(0, processes={TREE: 75, OTHER: 25})])
    assert gpu_e.energy_j == pytest.approx(0.75 * GPU_J)


def test_idle_power_is_shared_among_contexts(fake_nvml):
    # Both hold a context, neither computes: the idle GPU's energy is split equally.
    _, gpu_e = metered(fake_nvml, [gpu(0, processes={TREE: 0, OTHER: 0})])
    assert gpu_e.energy_j == pytest.approx(GPU_J / 2)
    assert "idle, shared by context 4.0 s" in gpu_e.detail


def test_a_gpu_nobody_holds_is_charged_to_no_one(fake_nvml):
    _, gpu_e = metered(fake_nvml, [gpu(0)])
    assert gpu_e.energy_j == 0.0
    assert "no context, charged to no one 4.0 s" in gpu_e.detail


def test_a_child_that_exited_keeps_its_share(fake_nvml):
    # The child (pid 5000) is in the tree at t=1 only; its samples keep arriving until it ends.
    def during(fake, t):
        if t >= 3.0:
            fake.GPUS[0]["processes"] = {}

    clock = Clock()
    fake_nvml.configure([gpu(0, processes={5000: 50})], clock=clock)
    meter = NvmlMeter(open_nvml())
    meter.start(tick(0.0, pids={TREE}))
    for t, pids in ((1.0, {TREE, 5000}), (2.0, {TREE}), (3.0, {TREE}), (4.0, {TREE})):
        clock.t = t
        during(fake_nvml, t)
        (meter.stop if t == 4.0 else meter.sample)(tick(t, pids=pids))
    # 0-2 s: the child computed (tree's); 2-4 s: the GPU idled with no context (no one's)
    assert meter.gpu_uses()[0].gpu_s == pytest.approx(2.0)


# -- fallbacks ----------------------------------------------------------------------------------
def test_no_samples_falls_back_to_compute_processes(fake_nvml):
    _, gpu_e = metered(fake_nvml, [gpu(0, utilization="none", processes={TREE: 99, OTHER: 1})])
    # SM activity is invisible here: each context holder pays the same
    assert gpu_e.energy_j == pytest.approx(GPU_J / 2)
    assert gpu_e.method == "measured: nvml, share by compute processes"
    _, sole = metered(fake_nvml, [gpu(0, utilization="none", processes={TREE: 0})])
    assert sole.energy_j == pytest.approx(GPU_J)


def test_older_drivers_use_the_older_utilisation_call(fake_nvml):
    _, gpu_e = metered(fake_nvml, [gpu(0, utilization="legacy", processes={TREE: 30, OTHER: 90})])
    assert gpu_e.energy_j == pytest.approx(0.25 * GPU_J)
    assert fake_nvml.CALLS["nvmlDeviceGetProcessUtilization"] >= 4
    # the newer call failed once and was not asked again
    assert fake_nvml.CALLS["nvmlDeviceGetProcessesUtilizationInfo"] == 1


def test_mig_instances_share_their_gpu_by_memory_slice(fake_nvml):
    migs = [
        {"uuid": "MIG-aaaaaaaa-0000-0000-0000-000000000001", "gi": 1, "memory_mib": 40000,
         "processes": {TREE: 80}},
        {"uuid": "MIG-aaaaaaaa-0000-0000-0000-000000000002", "gi": 2, "memory_mib": 20000,
         "processes": {OTHER: 80}},
    ]
    _, gpu_e = metered(fake_nvml, [gpu(0, memory_mib=80000, migs=migs)])
    assert gpu_e.energy_j == pytest.approx(0.5 * GPU_J)
    assert gpu_e.method == "measured: nvml, share by MIG instance and compute processes"


def test_two_gpus_only_the_used_one_is_charged(fake_nvml):
    _, gpu_e = metered(fake_nvml, [gpu(0, processes={TREE: 50}), gpu(1, processes={OTHER: 50})])
    assert gpu_e.energy_j == pytest.approx(GPU_J)
    assert "GPU 1 NVIDIA H100 80GB HBM3 (GPU-00000001): 0 J of 800.0 J" in gpu_e.detail


# -- NVML errors --------------------------------------------------------------------------------
def test_an_error_mid_window_is_recovered_by_the_counter(fake_nvml):
    def during(fake, t):
        if t == 2.0:
            fake.FAIL["nvmlDeviceGetTotalEnergyConsumption"] = fake.NVML_ERROR_TIMEOUT
        else:
            fake.FAIL.clear()

    _, gpu_e = metered(fake_nvml, [gpu(0, processes={TREE: 50})], during=during)
    assert gpu_e.energy_j == pytest.approx(GPU_J)  # the counter spans the failed reading
    assert gpu_e.incomplete == ""
    assert "1 NVML error(s) recovered (first: NVML: Timeout at 2.0 s)" in gpu_e.detail


def test_power_samples_are_interpolated_across_a_failed_reading(fake_nvml):
    def during(fake, t):
        fake.FAIL.clear()
        if t == 2.0:
            fake.FAIL["nvmlDeviceGetPowerUsage"] = fake.NVML_ERROR_UNKNOWN

    spec = gpu(0, counter=False, power_w=lambda t: 100.0 + 50.0 * t, processes={TREE: 50})
    _, gpu_e = metered(fake_nvml, [spec], during=during)
    # linear power: the trapezoid over [1, 3] is still exact; integral of 100 + 50 t on [0, 4]
    assert gpu_e.energy_j == pytest.approx(400.0 + 400.0)
    assert gpu_e.incomplete == ""


def test_nvml_failing_at_close_keeps_the_window_marked_incomplete(fake_nvml, tmp_path):
    clock = Clock()
    fake_nvml.configure([gpu(0, processes={TREE: 50})], clock=clock)
    closed = []
    config = CarbonConfig(powercap_root=str(tmp_path), sample_interval_s=3600)
    meter = NvmlMeter(open_nvml())
    probes = ScriptedProbes(step_s=1.0, tree_pids={TREE})
    with track("fine-tune", config=config, probes=probes, meters=[meter], on_close=closed.append):
        probes.t, clock.t = 1.0, 1.0
        meter.sample(probes.tick())  # one good reading at 1 s
        fake_nvml.FAIL["nvmlDeviceGetTotalEnergyConsumption"] = fake_nvml.NVML_ERROR_GPU_IS_LOST
        probes.t, clock.t = 3.0, 3.0  # the window closes at t = 3 s
    fp = closed[0]
    assert fp.closed and fp.duration_s == pytest.approx(3.0)
    gpu_e = fp.components["gpu"]
    assert gpu_e.energy_j == pytest.approx(200.0)  # 0-1 s read; 1-3 s lost
    assert "1.0 s to the end (3.0 s) not counted (NVML: GPU is lost at 3.0 s)" in gpu_e.incomplete
    assert fp.to_dict()["components"]["gpu"]["incomplete"] == gpu_e.incomplete


def test_a_failed_first_reading_counts_from_the_next_good_one(fake_nvml):
    clock = Clock()
    fake_nvml.configure([gpu(0, processes={TREE: 50})], clock=clock)
    meter = NvmlMeter(open_nvml())
    fake_nvml.FAIL["nvmlDeviceGetTotalEnergyConsumption"] = fake_nvml.NVML_ERROR_TIMEOUT
    meter.start(tick(0.0, pids={TREE}))
    fake_nvml.FAIL.clear()
    for t in (1.0, 2.0):
        clock.t = t
        meter.sample(tick(t, pids={TREE}))
    clock.t = 3.0
    gpu_e = meter.stop(tick(3.0, pids={TREE}))["gpu"]
    assert gpu_e.energy_j == pytest.approx(400.0)  # 1-3 s
    assert "0.0 s to 1.0 s not counted (NVML: Timeout at 0.0 s)" in gpu_e.incomplete


def test_pids_from_another_pid_namespace_are_pointed_out(fake_nvml):
    # Above pid_max (2**22): no process here has it, as with a host pid seen from a container.
    host_pid = 2**22 + 17
    _, gpu_e = metered(fake_nvml, [gpu(0, processes={host_pid: 90})])
    assert gpu_e.energy_j == 0.0
    assert "1 of them not visible from this PID namespace" in gpu_e.detail
    assert "--pid=host" in gpu_e.detail
    _, mine = metered(fake_nvml, [gpu(0, processes={TREE: 90, host_pid: 90})])
    assert "PID namespace" not in mine.detail  # the job was matched: nothing to explain


def test_the_method_names_the_fallback_even_when_no_one_held_the_gpu(fake_nvml):
    _, gpu_e = metered(fake_nvml, [gpu(0, utilization="none")])
    assert gpu_e.energy_j == 0.0
    assert gpu_e.method == "measured: nvml, share by compute processes"
