"""`lowcarb.store.measured.measure_and_save`: a measured command saved as a run (`lowcarb measure`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lowcarb.interrupts import Terminated
from lowcarb.measure import CarbonConfig
from lowcarb.store import RunStore
from lowcarb.store import measured as measured_module
from lowcarb.store.measured import measure_and_save

CONFIG = CarbonConfig(intensity_g_per_kwh=100.0, powercap_root="/nonexistent", sample_interval_s=0.05)


@pytest.fixture
def store(tmp_path, monkeypatch):
    for var in ("LOWCARB_JOB", "LOWCARB_RUN_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    return RunStore(tmp_path / "runs.db")


def test_a_command_is_measured_saved_and_its_run_finished_after_the_figures(store):
    seen = []

    def on_measured(done):  # the figures come while the run is still open
        seen.append((done.exit_code, store.get_run(done.run_id).status))

    done = measure_and_save(store, [sys.executable, "-c", "sum(range(300000)); raise SystemExit(3)"],
                            config=CONFIG, unit="sample", units=10, on_measured=on_measured)
    assert seen == [(3, "running")] and done.exit_code == 3 and done.name == Path(sys.executable).name
    run = store.get_run(done.run_id)
    assert run.kind == "measure" and run.status == "failed" and run.exit_code == 3
    assert run.settings["units"] == 10 and run.metrics["energy_j"] == pytest.approx(done.footprint.energy_j)
    (window,) = store.footprints(done.run_id)
    assert window["total_g"] == pytest.approx(done.footprint.total_g)


def test_a_clean_exit_completes_the_run(store):
    done = measure_and_save(store, [sys.executable, "-c", "pass"], config=CONFIG, name="noop")
    assert store.get_run(done.run_id).status == "completed" and done.name == "noop"


@pytest.mark.parametrize(("raised", "status"), [(Terminated(15), "interrupted"), (RuntimeError("x"), "failed")])
def test_every_other_exit_path_finishes_the_run(store, monkeypatch, raised, status):
    def stops(*args, **kwargs):
        raise raised

    monkeypatch.setattr(measured_module, "measure_command", stops)
    with pytest.raises(type(raised)):
        measure_and_save(store, [sys.executable, "-c", "pass"], config=CONFIG)
    (run,) = store.list_runs()
    assert run.status == status
