"""Embodied CO2e of the GPUs a window used: by GPU-seconds, apart from the server's, round-tripped."""

from __future__ import annotations

import pytest

from lowcarb.measure import CarbonConfig, Footprint, load_carbon_config, track
from lowcarb.measure.embodied import SECONDS_PER_YEAR
from lowcarb.measure.gpu_embodied import gpu_default, gpu_embodied
from lowcarb.measure.gpu_meter import GpuUse, NvmlMeter
from lowcarb.measure.nvml import open_nvml

from .fakegpu import OTHER, TREE, Clock, gpu
from .scripted import ScriptedProbes


def test_packaged_default_is_one_card_over_three_years():
    d = gpu_default()
    assert (d["embodied_kg"], d["lifetime_years"]) == (143.0, 3.0)
    assert "Boavizta" in d["source"]


def test_gpu_embodied_formula():
    uses = [GpuUse("NVIDIA H100", "GPU-1", 3600.0), GpuUse("NVIDIA H100", "GPU-2", 1800.0)]
    grams, detail = gpu_embodied(uses)
    # 143 kg x 5,400 GPU-s / 3 years
    assert grams == pytest.approx(143_000 * 5400 / (3 * SECONDS_PER_YEAR))
    assert "143 kg x 5400.0 GPU-s" in detail and "/ 3 y" in detail and "Boavizta" in detail
    grams, detail = gpu_embodied(uses, embodied_kg=286.0, lifetime_years=6.0)
    assert grams == pytest.approx(286_000 * 5400 / (6 * SECONDS_PER_YEAR))
    assert detail.endswith("configured")
    assert gpu_embodied([]) == (0.0, "")


def window(fake, processes, tmp_path, **config):
    clock = Clock()
    fake.configure([gpu(0, processes=processes)], clock=clock)
    config = CarbonConfig(powercap_root=str(tmp_path), sample_interval_s=3600, **config)
    probes = ScriptedProbes(step_s=4.0, tree_pids={TREE})
    with track("train", config=config, probes=probes, meters=[NvmlMeter(open_nvml())]) as fp:
        clock.t = 4.0
    return fp


def test_a_window_on_a_gpu_is_charged_its_share_apart_from_the_server(fake_nvml, tmp_path):
    sole = window(fake_nvml, {TREE: 50}, tmp_path)
    assert sole.gpu_embodied_g == pytest.approx(143_000 * 4.0 / (3 * SECONDS_PER_YEAR))
    assert sole.embodied_g == pytest.approx(sole.server_embodied_g + sole.gpu_embodied_g)
    assert sole.total_g == pytest.approx(sole.operational_g + sole.embodied_g)
    half = window(fake_nvml, {TREE: 50, OTHER: 50}, tmp_path)
    assert half.gpu_embodied_g == pytest.approx(sole.gpu_embodied_g / 2)
    assert "2.0 GPU-s" in half.gpu_embodied_detail


def test_a_window_that_used_no_gpu_is_charged_no_gpu_embodied(fake_nvml, tmp_path):
    fp = window(fake_nvml, {OTHER: 90}, tmp_path)
    assert fp.gpu_embodied_g == 0.0 and fp.gpu_embodied_detail == ""
    assert fp.embodied_g == fp.server_embodied_g


def test_configured_gpu_footprint(fake_nvml, tmp_path, monkeypatch):
    fp = window(fake_nvml, {TREE: 50}, tmp_path, gpu_embodied_kg=300.0, gpu_lifetime_years=5.0)
    assert fp.gpu_embodied_g == pytest.approx(300_000 * 4.0 / (5 * SECONDS_PER_YEAR))
    monkeypatch.setenv("LOWCARB_GPU_EMBODIED_KG", "250")
    monkeypatch.setenv("LOWCARB_GPU_LIFETIME_YEARS", "4")
    cfg = load_carbon_config()
    assert (cfg.gpu_embodied_kg, cfg.gpu_lifetime_years) == (250.0, 4.0)
    assert load_carbon_config(gpu_embodied_kg=100.0).gpu_embodied_kg == 100.0
    with pytest.raises(ValueError, match="gpu_embodied_kg must be >= 0"):
        CarbonConfig(gpu_embodied_kg=-1.0)
    with pytest.raises(ValueError, match="gpu_lifetime_years must be > 0"):
        CarbonConfig(gpu_lifetime_years=0.0)


def test_gpu_figures_round_trip_through_dict(fake_nvml, tmp_path):
    fp = window(fake_nvml, {TREE: 50}, tmp_path)
    back = Footprint.from_dict(fp.to_dict())
    assert back.gpu_embodied_g == fp.gpu_embodied_g > 0
    assert back.gpu_embodied_detail == fp.gpu_embodied_detail
    assert back.components["gpu"] == fp.components["gpu"]
    assert back.total_g == pytest.approx(fp.total_g)
    # footprints stored before these fields existed still load
    old = fp.to_dict()
    for key in ("gpu_embodied_g", "gpu_embodied_detail"):
        old.pop(key)
    old["components"]["gpu"].pop("incomplete")
    legacy = Footprint.from_dict(old)
    assert legacy.gpu_embodied_g == 0.0 and legacy.components["gpu"].incomplete == ""
