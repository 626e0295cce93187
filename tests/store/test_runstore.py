"""The run store: runs, footprints, stage results, prefixes, and the errors that protect a file."""

from __future__ import annotations

import sqlite3

import pytest

from lowcarb.measure import CarbonConfig, track
from lowcarb.store import RunNotFound, RunStore, StoreError


def _footprint(tmp_path, name="w", units=None):
    config = CarbonConfig(intensity_g_per_kwh=300.0, powercap_root=str(tmp_path))
    with track(name, config=config, unit="x" if units else None, units=units) as fp:
        pass
    return fp


def test_run_life_cycle(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run("recipe", "demo", command="lowcarb run", settings={"lr": 1e-3})
    assert len(run_id) == 8 and int(run_id, 16) >= 0
    fp = _footprint(tmp_path, units=4)
    assert store.add_footprint(run_id, fp) >= 1
    store.add_stage_result(run_id, 0, "train", {"accuracy": 0.9})
    store.add_stage_result(run_id, 0, "train", {"accuracy": 0.95})  # same index: replaced
    store.set_artifacts_dir(run_id, tmp_path / "art")
    rec = store.get_run(run_id)
    assert (rec.status, rec.kind, rec.settings, rec.ended_at) == ("running", "recipe", {"lr": 1e-3}, None)
    store.finish_run(run_id, "completed", exit_code=0, metrics={"accuracy": 0.95})
    rec = store.get_run(run_id[:5])
    assert rec.status == "completed" and rec.metrics == {"accuracy": 0.95} and rec.ended_at
    assert rec.artifacts_dir == str(tmp_path / "art")
    assert store.footprints(run_id) == [fp.to_dict()]
    assert store.stage_results(run_id) == [{"index": 0, "stage": "train", "metrics": {"accuracy": 0.95}}]
    assert [r.run_id for r in store.list_runs()] == [run_id]
    with pytest.raises(ValueError, match="status must be one of"):
        store.finish_run(run_id, "done")


def test_totals_count_top_level_windows_only(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run("track", "t")
    config = CarbonConfig(intensity_g_per_kwh=300.0, powercap_root=str(tmp_path))
    def save(f):
        store.add_footprint(run_id, f)

    with track("outer", config=config, on_close=save) as outer, track("inner", config=config, on_close=save):
        sum(range(100_000))
    totals = store.run_totals(run_id)
    assert totals["windows"] == 2
    assert totals["energy_j"] == pytest.approx(outer.energy_j)
    assert totals["total_g"] == pytest.approx(outer.total_g)


def test_unknown_and_ambiguous_ids(tmp_path, monkeypatch):
    import lowcarb.store.runstore as runstore

    store = RunStore(tmp_path / "runs.db")
    ids = iter(["abcd0001", "abcd0001", "abcd0002", "ff000000"])  # includes one collision
    monkeypatch.setattr(runstore.secrets, "token_hex", lambda n: next(ids))
    a = store.create_run("track", "a")
    b = store.create_run("track", "b")  # the colliding id is retried, not overwritten
    c = store.create_run("track", "c")
    assert (a, b, c) == ("abcd0001", "abcd0002", "ff000000")
    with pytest.raises(RunNotFound, match="ambiguous.*abcd0001, abcd0002"):
        store.get_run("abcd")
    assert store.get_run("abcd0002").name == "b" and store.get_run("ff").name == "c"
    with pytest.raises(RunNotFound, match="no run 'zzz'"):
        store.get_run("zzz")
    with pytest.raises(RunNotFound, match="lowcarb runs"):
        store.add_footprint("nope", _footprint(tmp_path))
    assert len(store.list_runs(limit=2)) == 2


def test_wal_mode_and_reopen(tmp_path):
    path = tmp_path / "runs.db"
    store = RunStore(path)
    run_id = store.create_run("track", "a")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert RunStore(path).get_run(run_id).name == "a"


def test_corrupted_store_is_an_error_and_is_not_overwritten(tmp_path):
    path = tmp_path / "runs.db"
    junk = b"this is not a database" * 200
    path.write_bytes(junk)
    with pytest.raises(StoreError, match="corrupted or not an SQLite file.*will not overwrite"):
        RunStore(path)
    assert path.read_bytes() == junk


def test_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a lowcarb run store"):
        RunStore(path)
    assert path.read_bytes() == before


def test_unwritable_location(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the run store folder"):
        RunStore(blocker / "sub" / "runs.db")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="is a folder"):
        RunStore(tmp_path / "dir.db")


def test_default_location_follows_lowcarb_home(monkeypatch, tmp_path):
    monkeypatch.setenv("LOWCARB_HOME", str(tmp_path / "h"))
    assert RunStore.default().path == tmp_path / "h" / "runs.db"
    monkeypatch.delenv("LOWCARB_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "u"))
    assert RunStore.default().path == tmp_path / "u" / ".lowcarb" / "runs.db"
