"""Exports: JSON with everything; CSV with CodeCarbon's emissions.csv columns and units."""

from __future__ import annotations

import csv
import io
import json

import pytest

from lowcarb.measure import CarbonConfig, track
from lowcarb.measure.probes import Tick
from lowcarb.store import CODECARBON_COLUMNS, RunStore


class ScriptedProbes:
    """A fake clock advancing `step_s` per tick; one busy core (tree CPU time = t)."""

    def __init__(self, step_s: float, tree_cpu_s=lambda t: t) -> None:
        self.t, self.step_s, self.tree_cpu_s = 0.0, step_s, tree_cpu_s

    def tick(self) -> Tick:
        tick = Tick(self.t, self.tree_cpu_s(self.t), 0.0, 0.0)
        self.t += self.step_s
        return tick

# The emissions.csv header written by CodeCarbon 3.3.2 (38 columns, timestamp ... wue).
CODECARBON_3_3_2_HEADER = "timestamp,project_name,run_id,experiment_id,duration,emissions,emissions_rate,cpu_power,gpu_power,ram_power,cpu_energy,gpu_energy,ram_energy,energy_consumed,water_consumed,country_name,country_iso_code,region,cloud_provider,cloud_region,os,python_version,codecarbon_version,cpu_count,cpu_model,gpu_count,gpu_model,longitude,latitude,ram_total_size,tracking_mode,cpu_utilization_percent,gpu_utilization_percent,ram_utilization_percent,ram_used_gb,on_cloud,pue,wue"
EXPECTED_CODECARBON = CODECARBON_3_3_2_HEADER.split(",")


@pytest.fixture
def store(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run("measure", "job")
    config = CarbonConfig(region="FR", pue=1.2, powercap_root=str(tmp_path))
    probes = ScriptedProbes(step_s=100.0, tree_cpu_s=lambda t: t)  # 100 CPU-s x 4 W = 400 J
    with track("job", config=config, probes=probes, unit="sample", units=10) as fp:
        pass
    store.add_footprint(run_id, fp)
    store.finish_run(run_id, "completed", exit_code=0)
    store.fp = fp
    store.run_id = run_id
    return store


def test_csv_columns_and_units(store):
    rows = list(csv.DictReader(io.StringIO(store.export_csv())))
    assert list(rows[0])[: len(EXPECTED_CODECARBON)] == EXPECTED_CODECARBON == CODECARBON_COLUMNS
    assert len(EXPECTED_CODECARBON) == 38
    assert store.export_csv().splitlines()[0].startswith(CODECARBON_3_3_2_HEADER + ",")
    row = rows[0]
    fp = store.fp
    assert row["run_id"] == store.run_id and row["project_name"] == "job"
    assert float(row["duration"]) == pytest.approx(100.0)
    # CodeCarbon multiplies energy and power by the PUE (1.2 here)
    assert float(row["cpu_energy"]) == pytest.approx(400.0 * 1.2 / 3.6e6)
    assert float(row["cpu_power"]) == pytest.approx(4.0 * 1.2)
    assert float(row["energy_consumed"]) == pytest.approx(fp.energy_j * 1.2 / 3.6e6)
    assert float(row["it_energy_consumed"]) == pytest.approx(fp.energy_j / 3.6e6)
    assert float(row["emissions"]) == pytest.approx(fp.operational_g / 1000)
    # emissions = energy_consumed (kWh, with PUE) x intensity, as CodeCarbon computes it
    intensity_kg_per_kwh = fp.intensity_g_per_kwh / 1000
    assert float(row["emissions"]) == pytest.approx(float(row["energy_consumed"]) * intensity_kg_per_kwh)
    assert (row["water_consumed"], row["wue"], row["tracking_mode"]) == ("0.0", "0.0", "process")
    import psutil

    assert float(row["ram_total_size"]) == pytest.approx(psutil.virtual_memory().total / 2**30)
    assert float(row["cpu_utilization_percent"]) == pytest.approx(100.0 / int(row["cpu_count"]))
    assert float(row["total_emissions"]) == pytest.approx(fp.total_g / 1000)
    assert (row["country_iso_code"], row["country_name"], row["region"]) == ("FRA", "France", "FR")
    assert float(row["pue"]) == 1.2 and row["cpu_method"].startswith("estimated")
    assert int(row["cpu_count"]) >= 1


def test_json_export(store):
    data = json.loads(store.export_json())
    (run,) = data["runs"]
    assert run["run_id"] == store.run_id and run["status"] == "completed"
    assert run["footprints"][0]["id"] == store.fp.id
    assert run["totals"]["total_g"] == pytest.approx(store.fp.total_g)
    assert json.loads(store.export_json([store.run_id[:4]]))["runs"][0]["run_id"] == store.run_id


def test_default_rows_sum_to_the_run_total_and_all_windows_adds_nested(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run("track", "nested")
    config = CarbonConfig(intensity_g_per_kwh=300.0, pue=1.5, powercap_root=str(tmp_path))

    def save(f):
        store.add_footprint(run_id, f)

    probes = ScriptedProbes(step_s=10.0)
    with track("outer", config=config, probes=probes, on_close=save):
        with track("inner a", config=config, probes=probes, on_close=save):
            pass
        with track("inner b", config=config, probes=probes, on_close=save):
            pass
    with track("second", config=config, probes=probes, on_close=save):
        pass
    totals = store.run_totals(run_id)
    rows = list(csv.DictReader(io.StringIO(store.export_csv())))
    assert [r["window_name"] for r in rows] == ["outer", "second"]  # top-level windows only
    assert sum(float(r["emissions"]) for r in rows) == pytest.approx(totals["operational_g"] / 1000)
    assert sum(float(r["total_emissions"]) for r in rows) == pytest.approx(totals["total_g"] / 1000)
    assert sum(float(r["duration"]) for r in rows) == pytest.approx(totals["duration_s"])
    every = list(csv.DictReader(io.StringIO(store.export_csv(all_windows=True))))
    assert [r["window_name"] for r in every] == ["inner a", "inner b", "outer", "second"]
    outer_id = next(r["window_id"] for r in every if r["window_name"] == "outer")
    assert [r["parent_window_id"] for r in every] == [outer_id, outer_id, "", ""]


def test_runs_of_lowcarb_0_1_report_ram_in_gib(tmp_path):
    from lowcarb.store.export import _ram_total_gib

    assert _ram_total_gib({"ram_total_size_gb": 8.0}) == pytest.approx(8e9 / 2**30)
    assert _ram_total_gib({"ram_total_bytes": 2**33, "ram_total_size_gb": 8.59}) == 8.0
    assert _ram_total_gib({}) == ""
