"""The ledger verbs against the run store: --store on both backends, reads that create nothing,
read-only stores, runs --delete, export --all-windows, a store that fills, a job of two commands."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lowcarb.cli import main
from lowcarb.store import RunStore, StoreWarning
from tests.store._backends import make_backend

PY = sys.executable
SRC = str(Path(__file__).parents[2] / "src")


@pytest.fixture(autouse=True)
def _deterministic(monkeypatch, tmp_path):
    # The CPU-time estimate whatever the machine, on a scripted bare-metal machine.
    monkeypatch.setenv("LOWCARB_POWERCAP_ROOT", str(tmp_path / "no-powercap"))
    monkeypatch.setenv("LOWCARB_SYSTEM_ROOT", str(tmp_path / "no-system"))
    monkeypatch.setenv("LOWCARB_SAMPLE_INTERVAL_S", "0.1")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path):
    for backend in make_backend(request.param, tmp_path):
        yield backend.location


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, verb: str) -> bool:
    return code == 2 and err.count("\n") == 1 and err.startswith(f"lowcarb {verb}: error: ")


def test_every_ledger_verb_on_either_backend(capsys, store_location):
    child = (
        "import lowcarb\n"
        "with lowcarb.track('inner step'):\n"
        "    sum(range(100000))\n"
    )
    code, out, _ = cli(capsys, "measure", "--store", store_location, "--name", "job", "--", PY, "-c", child)
    assert code == 0 and "saved as run" in out
    (run,) = RunStore(store_location).list_runs()
    code, out, _ = cli(capsys, "runs", "--store", store_location)
    assert code == 0 and run.run_id in out and "job" in out
    code, out, _ = cli(capsys, "show", run.run_id, "--store", store_location)
    assert code == 0 and "embodied share:" in out and "cpu-time" in out
    assert "inner step" in out and "inside" in out  # the command's own window, nested in the run
    code, out, _ = cli(capsys, "export", "--format", "csv", "--store", store_location)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["window_name"] for r in rows] == ["job"]  # top-level only: sums to the run total
    code, out, _ = cli(capsys, "export", "--format", "csv", "--all-windows", "--store", store_location)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["window_name"] for r in rows] == ["inner step", "job"]
    assert rows[0]["parent_window_id"] == rows[1]["window_id"]
    code, out, _ = cli(capsys, "runs", "--delete", run.run_id[:5], "--store", store_location)
    assert code == 0 and f"deleted run {run.run_id} (2 windows" in out
    assert RunStore(store_location).list_runs() == []


def test_a_read_verb_creates_no_store(capsys, tmp_path, monkeypatch):
    target = tmp_path / "new" / "dir" / "x.db"
    code, _, err = cli(capsys, "runs", "--store", str(target))
    assert one_line_error(code, err, "runs") and "no run store at" in err
    for argv in (["show", "abc"], ["export"], ["report", "abc"], ["compare", "a", "b"]):
        code, _, err = cli(capsys, *argv, "--store", str(target))
        assert one_line_error(code, err, argv[0]), err
    assert not (tmp_path / "new").exists()
    home = tmp_path / "home"
    monkeypatch.setenv("LOWCARB_HOME", str(home))
    code, out, _ = cli(capsys, "runs")  # the default store, never written yet
    assert code == 0 and "no runs yet" in out and not home.exists()


def test_a_read_only_store_can_be_listed(tmp_path):
    store_path = tmp_path / "ro" / "runs.db"
    store = RunStore(store_path)
    store.finish_run(store.create_run("measure", "shared run"), "completed")
    for p in store_path.parent.iterdir():
        p.chmod(0o444)
    store_path.parent.chmod(0o555)
    argv = [PY, "-m", "lowcarb", "runs", "--store", str(store_path)]
    if os.getuid() == 0:  # root ignores file modes unless it drops the capabilities that allow it
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *argv]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC})
    finally:
        store_path.parent.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    assert "shared run" in proc.stdout


def test_runs_delete_checks_every_id_first_and_refuses_a_live_run(capsys, tmp_path):
    path = str(tmp_path / "s.db")
    store = RunStore(path)
    done = store.create_run("measure", "done")
    store.finish_run(done, "completed")
    live = store.create_run("measure", "live")  # this test process is its writer
    code, _, err = cli(capsys, "runs", "--delete", done, "nosuchid", "--store", path)
    assert one_line_error(code, err, "runs") and "no run 'nosuchid'" in err
    assert len(store.list_runs()) == 2  # nothing deleted
    code, _, err = cli(capsys, "runs", "--delete", live, "--store", path)
    assert one_line_error(code, err, "runs") and "--force" in err
    code, out, _ = cli(capsys, "runs", "--delete", live, done, "--force", "--store", path)
    assert code == 0 and out.count("deleted run") == 2 and store.list_runs() == []
    code, _, err = cli(capsys, "runs", "--force", "--store", path)
    assert one_line_error(code, err, "runs") and "--force goes with --delete" in err
    code, _, err = cli(capsys, "runs", "--delete", "x", "--store", str(tmp_path / "none.db"))
    assert one_line_error(code, err, "runs") and not (tmp_path / "none.db").exists()


def test_a_run_with_an_unprintable_name_can_still_be_listed_and_deleted(capsys, tmp_path):
    path = str(tmp_path / "s.db")
    store = RunStore(path)
    run_id = store.create_run("recipe", "[/bold] x [link=http://e.vil]y")
    store.finish_run(run_id, "failed")
    code, out, _ = cli(capsys, "runs", "--store", path)
    assert code == 0 and "[/bold] x" in out
    code, out, _ = cli(capsys, "runs", "--delete", run_id, "--store", path)
    assert code == 0 and store.list_runs() == []


def test_export_all_windows_is_for_csv(capsys, tmp_path):
    code, _, err = cli(capsys, "export", "--all-windows", "--store", str(tmp_path / "s.db"))
    assert one_line_error(code, err, "export") and "--format csv" in err


def test_broken_row_is_a_warning_line_not_a_failure(capsys, tmp_path):
    import sqlite3

    path = tmp_path / "s.db"
    assert cli(capsys, "measure", "--store", str(path), "--", "true")[0] == 0
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE footprints SET data = '{oops'")
    for argv in (["runs"], ["export", "--format", "csv"]):
        code, out, err = cli(capsys, *argv, "--store", str(path))
        assert code == 0, err
        assert "lowcarb: warning: run store" in err and "footprint row 1 of run" in err
        assert "Traceback" not in err


def test_a_full_store_still_shows_the_measurement_and_says_what_was_not_saved(capsys, tmp_path, monkeypatch):
    import sqlite3

    path = tmp_path / "s.db"
    RunStore(path)
    real = sqlite3.connect

    def full(*args, **kwargs):
        # Once the run is created, the disk is full: the store cannot grow by a page.
        conn = real(*args, **kwargs)
        if conn.execute("SELECT count(*) FROM runs").fetchone()[0]:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(sqlite3, "connect", full)
    name = "big" + "g" * 20_000  # a window too large for the free room left in the file's pages
    code, out, err = cli(capsys, "measure", "--store", str(path), "--name", name, "--", PY, "-c", "pass")
    monkeypatch.undo()
    assert "total CO2e" in out  # the figures are shown
    lines = err.splitlines()
    assert lines[0].startswith("lowcarb: warning: run store") and "kept in memory" in lines[0]
    assert one_line_error(code, lines[-1] + "\n", "measure") and len(lines) == 2
    assert "is full" in lines[-1] and "window 'bigggg" in lines[-1] and "could not be saved" in lines[-1]
    (run,) = RunStore(path).list_runs()
    assert run.status == "running" and "stays 'running'" in lines[-1]


def test_two_commands_of_one_job_share_a_run(tmp_path):
    path = str(tmp_path / "job.db")
    env = {**os.environ, "PYTHONPATH": SRC, "LOWCARB_JOB": "train-7", "LOWCARB_POWERCAP_ROOT": "/none"}
    procs = [
        subprocess.Popen([PY, "-m", "lowcarb", "measure", "--store", path, "--name", f"rank{i}", "--",
                          PY, "-c", "sum(range(300000))"], env=env, stdout=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for p in procs:
        p.communicate(timeout=300)
        assert p.returncode == 0
    (run,) = RunStore(path).list_runs()
    assert run.job_id == "train-7" and run.status == "completed" and run.kind == "measure"
    names = sorted(f["name"] for f in RunStore(path).footprints(run.run_id))
    assert names == ["rank0", "rank1"]


def test_lowcarb_warnings_are_one_line_and_others_pass_through(capsys, monkeypatch):
    import warnings

    from lowcarb.cli import common

    passed: list[str] = []
    monkeypatch.setattr(warnings, "showwarning", lambda m, *a, **k: passed.append(str(m)))
    common.one_line_warnings()
    common.one_line_warnings()  # installed once, not twice
    warnings.showwarning(StoreWarning("a store thing"), StoreWarning, "x.py", 1)
    warnings.showwarning(UserWarning("something else"), UserWarning, "x.py", 2)
    assert capsys.readouterr().err == "lowcarb: warning: a store thing\n"
    assert passed == ["something else"]


def test_measure_inside_a_tracked_parent_saves_into_the_parents_run(tmp_path):
    path = str(tmp_path / "nested.db")
    env = {**os.environ, "PYTHONPATH": SRC, "LOWCARB_STORE": path, "LOWCARB_POWERCAP_ROOT": "/none"}
    code = (
        "import subprocess, sys\n"
        "import lowcarb\n"
        "with lowcarb.track('parent'):\n"
        "    subprocess.run([sys.executable, '-m', 'lowcarb', 'measure', '--name', 'inner', '--',\n"
        "                    sys.executable, '-c', 'pass'], check=True, capture_output=True)\n"
    )
    subprocess.run([PY, "-c", code], check=True, env=env, timeout=300)
    (run,) = RunStore(path).list_runs()  # one run: the measured command did not start another
    assert (run.name, run.status) == ("parent", "completed")
    inner, parent = RunStore(path).footprints(run.run_id)
    assert (inner["name"], parent["name"]) == ("inner", "parent") and inner["parent"] == parent["id"]
    assert RunStore(path).run_totals(run.run_id)["energy_j"] == pytest.approx(parent["energy_j"])
