"""The SQLite backend's own cases: read-only files, schema 1 stores, odd paths."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from lowcarb.store import RunStore, SqliteRunStore
from lowcarb.store.records import SCHEMA_VERSION
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
