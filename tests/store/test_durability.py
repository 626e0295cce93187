"""The store survives a writer killed with SIGKILL mid-run, and concurrent writers lose nothing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from lowcarb.store import RunStore

WRITER = str(Path(__file__).with_name("_writer.py"))


def _env() -> dict[str, str]:
    return {**os.environ, "LOWCARB_NO_STORE": "1"}


def test_sigkill_mid_run_keeps_closed_windows(tmp_path):
    path = tmp_path / "runs.db"
    store = RunStore(path)
    run_id = store.create_run("track", "crash")
    proc = subprocess.Popen(
        [sys.executable, WRITER, str(path), run_id, "5", "hang"],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stdout.readline().strip() == "closed 5"
        assert proc.stdout.readline().strip() == "open"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    names = [f["name"] for f in RunStore(path).footprints(run_id)]
    assert names == [f"w{i}" for i in range(5)]
    assert RunStore(path).get_run(run_id).status == "running"  # nobody finished it
    assert not RunStore(path).writer_gone(run_id)  # this test process created the run and lives
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "runs.db"
    store = RunStore(path)
    runs = [store.create_run("track", f"writer{i}") for i in range(2)]
    n = 40
    procs = [
        subprocess.Popen([sys.executable, WRITER, str(path), r, str(n)], stdout=subprocess.PIPE, env=_env())
        for r in runs
    ]
    for p in procs:
        p.wait(timeout=120)
        assert p.returncode == 0, p.stdout.read()
    for r in runs:
        assert [f["name"] for f in store.footprints(r)] == [f"w{i}" for i in range(n)]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM footprints").fetchone()[0] == 2 * n


def test_run_of_a_killed_process_is_flagged(tmp_path):
    path = tmp_path / "runs.db"
    code = (
        "import sys, time\nfrom lowcarb.store import RunStore\n"
        f"print(RunStore({str(path)!r}).create_run('track', 'victim'), flush=True)\ntime.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_env())
    run_id = proc.stdout.readline().strip()
    assert not RunStore(path).writer_gone(run_id)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert RunStore(path).writer_gone(run_id)
