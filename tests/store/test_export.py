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

# The emissions.csv header written by CodeCarbon 2.x (timestamp ... pue).
EXPECTED_CODECARBON = ["timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions", "emissions_rate", "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed", "country_name", "country_iso_code", "region", "cloud_provider", "cloud_region", "os", "python_version", "codecarbon_version", "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude", "latitude", "ram_total_size", "tracking_mode", "on_cloud", "pue"]


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
    row = rows[0]
    fp = store.fp
    assert row["run_id"] == store.run_id and row["project_name"] == "job"
    assert float(row["duration"]) == pytest.approx(100.0)
    assert float(row["cpu_energy"]) == pytest.approx(400.0 / 3.6e6)
    assert float(row["cpu_power"]) == pytest.approx(4.0)
    assert float(row["energy_consumed"]) == pytest.approx(fp.energy_j / 3.6e6)
    assert float(row["emissions"]) == pytest.approx(fp.operational_g / 1000)
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
