"""One conformance suite, run through both run store backends (SQLite and PostgreSQL).

Optuna-style: every guarantee of `lowcarb.store.RunStore` is a test here, and each test runs once
per backend (the `backend` fixture): runs and windows, ids, totals, deletion, reads that create
nothing, read-only stores, broken rows, a full store, 8 concurrent writers with one killed, and a
job whose processes share one run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lowcarb.measure import CarbonConfig, track
from lowcarb.store import (
    RunNotFound,
    RunStore,
    StoreError,
    StoreFullError,
    StoreNotFound,
    StoreWarning,
)

from ._backends import Backend

HERE = Path(__file__).parent
CONFIG = CarbonConfig(intensity_g_per_kwh=300.0, powercap_root="/nonexistent", sample_interval_s=60)


def footprint(name: str = "w", units: float | None = None):
    with track(name, config=CONFIG, unit="x" if units else None, units=units) as fp:
        sum(range(10_000))
    return fp


def test_run_life_cycle(backend: Backend):
    store = RunStore(backend.location)
    run_id = store.create_run("recipe", "demo", command="lowcarb run", settings={"lr": 1e-3})
    assert len(run_id) == 8 and int(run_id, 16) >= 0
    fp = footprint(units=4)
    assert store.add_footprint(run_id, fp) >= 1
    store.add_stage_result(run_id, 0, "train", {"accuracy": 0.9})
    store.add_stage_result(run_id, 0, "train", {"accuracy": 0.95})  # same index: replaced
    store.set_artifacts_dir(run_id, "/tmp/art")
    rec = store.get_run(run_id)
    assert (rec.status, rec.kind, rec.settings, rec.ended_at) == ("running", "recipe", {"lr": 1e-3}, None)
    store.finish_run(run_id, "completed", exit_code=0, metrics={"accuracy": 0.95})
    rec = RunStore(backend.location).get_run(run_id[:5])  # a new handle sees everything
    assert rec.status == "completed" and rec.metrics == {"accuracy": 0.95} and rec.ended_at
    assert rec.artifacts_dir == "/tmp/art" and rec.exit_code == 0 and rec.job_id is None
    assert store.footprints(run_id) == [fp.to_dict()]
    assert store.stage_results(run_id) == [{"index": 0, "stage": "train", "metrics": {"accuracy": 0.95}}]
    assert [r.run_id for r in store.list_runs()] == [run_id]
    assert store.machine(run_id)["ram_total_bytes"] > 0
    with pytest.raises(ValueError, match="status must be one of"):
        store.finish_run(run_id, "done")


def test_totals_count_top_level_windows_only(backend: Backend):
    store = RunStore(backend.location)
    run_id = store.create_run("track", "t")

    def save(f):
        store.add_footprint(run_id, f)

    with track("outer", config=CONFIG, on_close=save) as outer, track("inner", config=CONFIG, on_close=save):
        sum(range(100_000))
    totals = store.run_totals(run_id)
    assert totals["windows"] == 2
    assert totals["energy_j"] == pytest.approx(outer.energy_j)
    assert totals["total_g"] == pytest.approx(outer.total_g)


def test_ids_prefixes_and_unknown_runs(backend: Backend, monkeypatch):
    import lowcarb.store.runstore as runstore

    store = RunStore(backend.location)
    ids = iter(["abcd0001", "abcd0001", "abcd0002", "ff000000"])  # includes one collision
    monkeypatch.setattr(runstore.secrets, "token_hex", lambda n: next(ids))
    assert [store.create_run("track", n) for n in "abc"] == ["abcd0001", "abcd0002", "ff000000"]
    with pytest.raises(RunNotFound, match="ambiguous.*abcd0001, abcd0002"):
        store.get_run("abcd")
    assert store.get_run("ff").name == "c"
    with pytest.raises(RunNotFound, match="no run 'zzz'"):
        store.get_run("zzz")
    with pytest.raises(RunNotFound, match="lowcarb runs"):
        store.add_footprint("nope", footprint())
    with pytest.raises(RunNotFound):
        store.get_run("abcd_")  # '%' and '_' are literal characters, never wildcards
    with pytest.raises(RunNotFound):
        store.get_run("%")
    assert len(store.list_runs(limit=2)) == 2


def test_delete_run(backend: Backend):
    store = RunStore(backend.location)
    keep = store.create_run("track", "keep")
    gone = store.create_run("track", "gone")
    store.add_footprint(gone, footprint())
    store.add_stage_result(gone, 0, "train", {"a": 1})
    store.add_footprint(keep, footprint())
    with pytest.raises(StoreError, match="still running.*--force"):
        store.delete_run(gone)  # this process is its writer, and it lives
    store.finish_run(gone, "completed")
    summary = store.delete_run(gone[:6])
    assert summary == {"run_id": gone, "name": "gone", "footprints": 1, "stage_results": 1, "artifacts_dir": None}
    with pytest.raises(RunNotFound):
        store.get_run(gone)
    assert [r.run_id for r in store.list_runs()] == [keep] and len(store.footprints(keep)) == 1
    assert store.delete_run(keep, force=True)["footprints"] == 1  # running, deleted anyway
    assert backend.raw("SELECT count(*) FROM footprints") == [(0,)]


def test_a_read_creates_nothing(backend: Backend, tmp_path):
    if backend.name == "sqlite":
        missing = tmp_path / "new" / "dir" / "x.db"
        with pytest.raises(StoreNotFound, match="nothing was created"):
            RunStore(missing, create=False)
        with pytest.raises(StoreNotFound):
            RunStore(missing, readonly=True)
        assert not (tmp_path / "new").exists()
    else:
        with pytest.raises(StoreNotFound, match="nothing was created"):
            RunStore(backend.location, readonly=True)
        assert backend.raw(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ?", (backend.schema,)
        ) == [(0,)]
    RunStore(backend.location).create_run("track", "now it exists")
    assert [r.name for r in RunStore(backend.location, readonly=True).list_runs()] == ["now it exists"]


def test_read_only_store_reads_and_refuses_writes(backend: Backend):
    writer = RunStore(backend.location)
    run_id = writer.create_run("track", "r")
    writer.add_footprint(run_id, footprint())
    reader = RunStore(backend.location, readonly=True)
    assert reader.get_run(run_id).name == "r" and len(reader.footprints(run_id)) == 1
    assert json.loads(reader.export_json())["runs"][0]["footprints"][0]["name"] == "w"
    with pytest.raises(StoreError, match="read-only"):
        reader.create_run("track", "x")
    with pytest.raises(StoreError, match="read-only"):
        reader.delete_run(run_id, force=True)


def test_broken_rows_are_skipped_and_named(backend: Backend):
    store = RunStore(backend.location)
    run_id = store.create_run("track", "damaged")
    good = footprint("good")
    store.add_footprint(run_id, good)
    row = store.add_footprint(run_id, footprint("bad"))
    backend.raw("UPDATE footprints SET data = ? WHERE id = ?", ("{not json", row))
    store.add_footprint(run_id, {"name": "partial", "id": "p1"})  # valid JSON, no ledger fields
    backend.raw("UPDATE runs SET metrics = ? WHERE run_id = ?", ("[[broken", run_id))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert [f["name"] for f in store.footprints(run_id)] == ["good"]
        assert store.run_totals(run_id)["energy_j"] == pytest.approx(good.energy_j)
        assert store.list_runs()[0].metrics == {}
        csv_text = store.export_csv()
        assert json.loads(store.export_json())["runs"][0]["run_id"] == run_id
    assert csv_text.count("\n") == 2  # header + the good window
    messages = {str(w.message) for w in seen if issubclass(w.category, StoreWarning)}
    loc = store.location
    assert f"run store {loc}: footprint row {row} of run {run_id} is not valid JSON" in "".join(messages)
    assert any(f"footprint row {row + 1} of run {run_id} lacks the ledger's fields" in m for m in messages)
    assert any(f"the metrics of run '{run_id}' is not valid JSON" in m for m in messages)


def _fill(backend: Backend, monkeypatch) -> None:
    """Make the store's storage full, for real, the way each backend reports it."""
    if backend.name == "sqlite":
        import sqlite3

        real = sqlite3.connect
        pages = real(backend.location).execute("PRAGMA page_count").fetchone()[0]

        def full(*args, **kwargs):
            conn = real(*args, **kwargs)
            conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL past this size
            return conn

        monkeypatch.setattr(sqlite3, "connect", full)
    else:
        backend.raw(
            "CREATE FUNCTION lowcarb_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'could not extend file: No space left on device' "
            "USING ERRCODE = 'disk_full'; END $$"
        )
        for table in ("footprints", "stage_results"):
            backend.raw(f"CREATE TRIGGER full_{table} BEFORE INSERT OR UPDATE ON {table} "
                        "FOR EACH ROW EXECUTE FUNCTION lowcarb_full()")


def _free(backend: Backend, monkeypatch) -> None:
    if backend.name == "sqlite":
        monkeypatch.undo()
    else:
        for table in ("footprints", "stage_results"):
            backend.raw(f"DROP TRIGGER full_{table} ON {table}")


def test_a_full_store_keeps_finished_work_and_says_so(backend: Backend, monkeypatch):
    store = RunStore(backend.location)
    run_id = store.create_run("recipe", "filling")
    store.add_footprint(run_id, footprint("setup"))
    big = {**footprint("train").to_dict(), "notes": "x" * 200_000}  # needs new pages
    _fill(backend, monkeypatch)
    with pytest.warns(StoreWarning, match="is full.*window 'train'.*kept in memory"):
        assert store.add_footprint(run_id, big) == 0
    with pytest.warns(StoreWarning, match="stage result 'train'"):
        store.add_stage_result(run_id, 1, "train", {"accuracy": 0.9, "pad": "y" * 200_000})
    assert store.unsaved == [f"window 'train' of run {run_id}", f"stage result 'train' of run {run_id}"]
    with pytest.raises(StoreFullError, match=r"finished \(completed\) but 2 record\(s\).*window 'train'"):
        store.finish_run(run_id, "completed")
    _free(backend, monkeypatch)
    store.finish_run(run_id, "completed")  # space again: the kept records are saved first
    assert store.unsaved == []
    assert [f["name"] for f in store.footprints(run_id)] == ["setup", "train"]
    assert store.stage_results(run_id)[0]["stage"] == "train"
    assert store.get_run(run_id).status == "completed"


def _env(backend: Backend, **extra: str) -> dict[str, str]:
    env = {**os.environ, "LOWCARB_STORE": backend.location, **extra}
    env.pop("LOWCARB_NO_STORE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parents[1] / "src"), env.get("PYTHONPATH")]))
    return env


def test_eight_concurrent_writers_and_one_killed(backend: Backend):
    store = RunStore(backend.location)
    runs = [store.create_run("track", f"writer{i}") for i in range(8)]
    n = 6
    env = {**_env(backend), "LOWCARB_NO_STORE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "_writer.py"), backend.location, r, str(n)]
            + (["hang"] if i == 0 else []),
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i, r in enumerate(runs)
    ]
    victim = procs[0]
    try:
        assert victim.stdout.readline().strip() == f"closed {n}"
        assert victim.stdout.readline().strip() == "open"
        os.kill(victim.pid, signal.SIGKILL)  # killed inside an open window
        for p in procs[1:]:
            out, _ = p.communicate(timeout=300)
            assert p.returncode == 0, out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    for r in runs:  # every closed window of every writer, the killed one's included
        assert [f["name"] for f in store.footprints(r)] == [f"w{i}" for i in range(n)]
    assert backend.raw("SELECT count(*) FROM footprints") == [(8 * n,)]


def test_a_two_process_job_shares_one_run(backend: Backend):
    env = _env(backend, LOWCARB_JOB="job-42")
    procs = [
        subprocess.Popen([sys.executable, str(HERE / "_job_worker.py"), f"rank{i}"]
                         + (["spawn"] if i == 0 else []), stdout=subprocess.PIPE, text=True, env=env)
        for i in range(2)
    ]
    outer_ids = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        outer_ids.append(out.strip())
    store = RunStore(backend.location)
    (run,) = store.list_runs()
    assert run.job_id == "job-42" and run.kind == "track" and run.status == "completed"
    assert sorted(p["status"] for p in store.processes(run.run_id)) == ["completed", "completed"]
    fps = {f["name"]: f for f in store.footprints(run.run_id)}
    assert set(fps) == {"rank0", "rank0 inner", "rank0 child", "rank1", "rank1 inner"}
    # the child process's window is nested in its parent's, like the in-process inner windows
    assert fps["rank0 child"]["parent"] == fps["rank0"]["id"] == outer_ids[0]
    assert fps["rank0 inner"]["parent"] == outer_ids[0] and fps["rank1"]["parent"] is None
    totals = store.run_totals(run.run_id)
    assert totals["energy_j"] == pytest.approx(fps["rank0"]["energy_j"] + fps["rank1"]["energy_j"])
    assert totals["total_g"] == pytest.approx(fps["rank0"]["total_g"] + fps["rank1"]["total_g"])


def test_job_status_waits_for_the_last_process(backend: Backend, monkeypatch):
    store = RunStore(backend.location)
    run_id = store.join_job("job-7", "track", "job-7")
    assert store.join_job("job-7", "track", "job-7") == run_id  # the same process joining again
    backend.raw(
        "INSERT INTO run_processes (run_id, host, pid, status, started_at) VALUES (?, 'other', 1, 'running', 'x')",
        (run_id,),
    )
    store.finish_run(run_id, "completed")
    assert store.get_run(run_id).status == "running"  # the other process is still at work
    assert not store.writer_gone(run_id)  # another machine's process: cannot be checked here
    backend.raw("UPDATE run_processes SET status = 'failed' WHERE host = 'other'")
    store.finish_run(run_id, "completed")
    assert store.get_run(run_id).status == "failed"  # the worst of its processes


def test_a_store_that_is_not_lowcarbs_is_refused(backend: Backend):
    if backend.name == "sqlite":
        import sqlite3

        with sqlite3.connect(backend.location) as conn:
            conn.execute("CREATE TABLE runs (x)")
    else:
        backend.raw("CREATE TABLE runs (x INTEGER)")
    with pytest.raises(StoreError, match="not a lowcarb run store"):
        RunStore(backend.location)
