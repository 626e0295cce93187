"""The CPU-time and RAM estimates on scripted CPU times: exact expected joules."""

from __future__ import annotations

import os

import pytest

from lowcarb.measure import DEFAULT_CPU_W_PER_CORE, CarbonConfig, track
from lowcarb.measure.estimate import CpuTimeEstimateMeter, RamEstimateMeter

from .scripted import ScriptedProbes, tick


def test_cpu_estimate_is_cpu_seconds_times_power_per_core():
    meter = CpuTimeEstimateMeter(4.0, "no rapl here")
    meter.start(tick(0.0, tree=12.5))
    meter.sample(tick(1.0, tree=13.0))
    out = meter.stop(tick(10.0, tree=20.0))
    assert out["cpu"].energy_j == pytest.approx(7.5 * 4.0)
    assert out["cpu"].method == "estimated: cpu-time x 4 W/core"
    assert out["cpu"].detail == "no rapl here"


def test_cpu_power_w_is_spread_over_logical_cpus(tmp_path):
    cores = os.cpu_count() or 1
    config = CarbonConfig(cpu_power_w=10.0 * cores, powercap_root=str(tmp_path))
    assert config.cpu_w_per_core() == pytest.approx(10.0)
    assert CarbonConfig().cpu_w_per_core() == DEFAULT_CPU_W_PER_CORE
    # 2 CPU-seconds per wall second for 3 s (two busy cores) = 6 CPU-s x 10 W = 60 J
    probes = ScriptedProbes(step_s=3.0, tree_cpu_s=lambda t: 2.0 * t)
    with track("est", config=config, probes=probes) as fp:
        pass
    assert fp.cpu_time_s == pytest.approx(6.0)
    assert fp.components["cpu"].energy_j == pytest.approx(60.0)


def test_ram_estimate_integrates_resident_memory():
    meter = RamEstimateMeter(0.392)
    meter.start(tick(0.0, rss=1e9))
    meter.sample(tick(10.0, rss=3e9))
    out = meter.stop(tick(20.0, rss=3e9))
    # 0.392 W/GB x (2 GB avg x 10 s + 3 GB x 10 s) = 0.392 x 50
    assert out["ram"].energy_j == pytest.approx(0.392 * 50.0)


def test_negative_power_rejected():
    with pytest.raises(ValueError, match="> 0 W"):
        CpuTimeEstimateMeter(-1.0)
    with pytest.raises(ValueError, match="CPU power must be > 0"):
        CarbonConfig(cpu_power_w=-5.0)
