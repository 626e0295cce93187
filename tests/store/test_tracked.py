"""`lowcarb.track`: saves into the default store, one run per outermost window, opt-out by env."""

from __future__ import annotations

import pytest

import lowcarb
from lowcarb.store import RunStore


def test_outermost_window_creates_a_track_run_and_nested_ones_join_it(monkeypatch):
    monkeypatch.delenv("LOWCARB_NO_STORE", raising=False)
    with lowcarb.track("train", unit="epoch", units=2) as outer, lowcarb.track("epoch 1"):
        pass
    with lowcarb.track("second"):
        pass
    store = RunStore.default()
    runs = store.list_runs()
    assert [r.name for r in runs] == ["second", "train"]
    assert all(r.kind == "track" and r.status == "completed" for r in runs)
    fps = store.footprints(runs[1].run_id)
    assert [f["name"] for f in fps] == ["epoch 1", "train"]
    assert fps[0]["parent"] == outer.id


def test_failed_window_marks_the_run_failed(monkeypatch):
    monkeypatch.delenv("LOWCARB_NO_STORE", raising=False)
    with pytest.raises(KeyError), lowcarb.track("oops"):
        raise KeyError("x")
    (run,) = RunStore.default().list_runs()
    assert run.status == "failed"
    assert RunStore.default().footprints(run.run_id)[0]["error"].startswith("KeyError")


def test_decorator_and_use_run(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run("recipe", "r")

    @lowcarb.track("stage")
    def stage():
        return 1

    with lowcarb.use_run(store, run_id):
        stage()
        stage()
    assert len(store.footprints(run_id)) == 2
    assert store.get_run(run_id).status == "running"  # the owner finishes its own run


def test_no_store(monkeypatch):
    monkeypatch.setenv("LOWCARB_NO_STORE", "1")
    with lowcarb.track("quiet") as fp:
        pass
    assert fp.closed
    assert not (RunStore.default().path.exists() and RunStore.default().list_runs())
