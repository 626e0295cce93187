"""A store that fills in the middle of `lowcarb run`: the finished stages are not lost, and the
user is told what could not be saved (issue 19, item 10)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from lowcarb.pipeline import load_recipe, run_recipe
from lowcarb.store import RunStore, StoreFullError, StoreWarning

FAST = ["train.max_steps=3", "train.batch_size=16", "evaluation.inferences=64"]


def test_a_store_that_fills_mid_run_keeps_the_finished_stages(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    with sqlite3.connect(path) as conn:  # small pages: every window needs pages of its own
        conn.execute("PRAGMA page_size = 512")
        conn.execute("VACUUM")
    store = RunStore(path)
    real = sqlite3.connect

    def fills_after_the_first_window(*args, **kwargs):
        conn = real(*args, **kwargs)
        if conn.execute("SELECT count(*) FROM footprints").fetchone()[0]:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from now on
        return conn

    monkeypatch.setattr(sqlite3, "connect", fills_after_the_first_window)
    with pytest.warns(StoreWarning, match="is full"), pytest.raises(StoreFullError) as err:
        run_recipe(load_recipe(None, FAST), out_dir=tmp_path / "out", quiet=True, store=store)
    monkeypatch.undo()
    message = str(err.value)
    assert "could not be saved" in message and "window 'train'" in message
    assert "stays 'running'" in message

    (run,) = store.list_runs()
    assert [f["name"] for f in store.footprints(run.run_id)] == ["setup"]  # saved before the fill
    # Everything the run finished is in its own output...
    metrics = json.loads((tmp_path / "out" / run.run_id / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    labels = [s["label"] for s in metrics["stages"]]
    assert "train" in labels and all(s["status"] == "completed" for s in metrics["stages"])
    # ...and still in the store's hands: with room again, finishing the run saves all of it.
    store.finish_run(run.run_id, "completed")
    assert store.unsaved == []
    assert [f["name"] for f in store.footprints(run.run_id)] == labels
    assert [s["stage"] for s in store.stage_results(run.run_id)] == labels
    assert store.get_run(run.run_id).status == "completed"
