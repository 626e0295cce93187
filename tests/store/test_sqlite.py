"""The SQLite backend's own cases: read-only files, schema 1 stores, odd paths."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lowcarb.store import RunStore, SqliteRunStore
from lowcarb.store.records import SCHEMA, SCHEMA_VERSION
from lowcarb.store.sqlite import APPLICATION_ID

# The schema lowcarb 0.1 wrote (user_version 1): no jobs.
SCHEMA_1 = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, command TEXT, settings TEXT,
    metrics TEXT, artifacts_dir TEXT, exit_code INTEGER, host TEXT, pid INTEGER, machine TEXT);
CREATE TABLE footprints (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL
    REFERENCES runs(run_id), window_id TEXT NOT NULL, parent TEXT, name TEXT NOT NULL,
    started_at TEXT, data TEXT NOT NULL);
CREATE TABLE stage_results (run_id TEXT NOT NULL REFERENCES runs(run_id), idx INTEGER NOT NULL,
    stage TEXT NOT NULL, metrics TEXT NOT NULL, PRIMARY KEY (run_id, idx));
"""


def _schema_1_store(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_1)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO runs VALUES ('0ld00001', 'measure', 'old', 'completed', '2024-01-01', "
            "NULL, NULL, '{}', '{}', NULL, 0, 'h', 1, '{\"ram_total_size_gb\": 8.0}')"
        )


def test_schema_1_store_is_read_as_is_and_migrated_on_write(tmp_path):
    path = tmp_path / "old.db"
    _schema_1_store(path)
    reader = RunStore(path, readonly=True)
    assert reader.schema_version == 1 and reader.get_run("0ld").name == "old"
    assert reader.processes("0ld00001") == [] and reader.export_csv().count("\n") == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1  # a read changed nothing
    writer = RunStore(path)
    assert writer.schema_version == SCHEMA_VERSION
    assert writer.get_run("0ld00001").job_id is None
    job_run = writer.join_job("j1", "track", "j1")
    assert writer.get_run(job_run).job_id == "j1"


def _without_write_permission(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a process that file permissions bind: as root, without the capabilities
    that override them (setpriv drops them from the bounding set before exec)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    argv = [sys.executable, "-c", code]
    if os.getuid() == 0:
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=env)


def test_a_read_only_store_can_be_read(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    path = folder / "runs.db"
    store = RunStore(path)
    run_id = store.create_run("measure", "team run")
    store.finish_run(run_id, "completed")
    for p in folder.iterdir():
        p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    folder.chmod(0o555)
    try:
        code = (
            "from lowcarb.store import RunStore\n"
            f"s = RunStore({str(path)!r}, readonly=True)\n"
            "print([r.name for r in s.list_runs()])\n"
            "try:\n"
            f"    RunStore({str(path)!r}).create_run('x', 'y')\n"
            "except Exception as e:\n"
            "    print(type(e).__name__, e)\n"
        )
        out = _without_write_permission(code)
    finally:
        folder.chmod(0o755)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first == "['team run']"
    assert second.startswith("StoreError") and "not writable" in second


def test_paths_with_uri_characters(tmp_path):
    path = tmp_path / "odd?name#1%.db"
    store = SqliteRunStore(path)
    run_id = store.create_run("track", "odd")
    assert path.exists() and RunStore(path, readonly=True).get_run(run_id).name == "odd"
    assert not (tmp_path / "odd").exists()


def _open_each_store(folder: Path, count: int, barrier: Any, errors: Any) -> None:
    """A worker of the creation race: at each barrier, open (and so create) store number i."""
    found = []
    for i in range(count):
        try:
            barrier.wait(60)
            SqliteRunStore(folder / f"s{i}.db")
        except Exception as exc:  # collected: the parent asserts there were none
            found.append(f"{type(exc).__name__}: {exc}")
    errors.put(found)


def test_processes_creating_one_store_at_once_all_open_it(tmp_path):
    # 8 processes released together onto each of 300 fresh paths: before creation was made safe
    # this failed in every try ("not a lowcarb run store" for a store caught half-made, or
    # "database is locked" on the switch to WAL); now every open succeeds.
    ctx = multiprocessing.get_context("fork")
    workers, stores = 8, 300
    barrier, errors = ctx.Barrier(workers), ctx.Queue()
    procs = [
        ctx.Process(target=_open_each_store, args=(tmp_path, stores, barrier, errors))
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    found = [e for _ in procs for e in errors.get(timeout=300)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert found == []
    for i in (0, stores - 1):
        with sqlite3.connect(tmp_path / f"s{i}.db") as conn:
            assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_store_being_created_elsewhere_is_waited_for(tmp_path):
    # Another process holds the creating transaction open: opening waits for it, then reads
    # the store it made (never calls it foreign, never creates it twice).
    path = tmp_path / "runs.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode = WAL")
    other.execute("BEGIN IMMEDIATE")
    for statement in SCHEMA.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT").split(";"):
        if statement.strip():
            other.execute(statement)
    other.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    other.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    opened: list[Any] = []
    thread = threading.Thread(target=lambda: opened.append(SqliteRunStore(path)))
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()  # waiting on the other's transaction, not failing
    other.execute("COMMIT")
    other.close()
    thread.join(timeout=60)
    (store,) = opened
    assert store.schema_version == SCHEMA_VERSION and store.list_runs() == []


def test_an_empty_file_is_a_store_being_created(tmp_path):
    path = tmp_path / "runs.db"
    path.touch()  # what a creator leaves for an instant before its first write
    assert RunStore(path, readonly=True).list_runs() == []
    store = RunStore(path)
    assert store.schema_version == SCHEMA_VERSION and store.create_run("track", "x")
