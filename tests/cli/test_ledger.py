"""The ledger verbs (measure, runs, show, export, regions): exit codes and one-line errors; against
the run store: --store on both backends, reads that create nothing, read-only stores, runs --delete,
export --all-windows, a store that fills, a job of two commands."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lowcarb.cli import main
from lowcarb.store import CODECARBON_COLUMNS, RunStore, StoreWarning
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


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_measure_exits_with_the_command_exit_code_and_saves_the_run(capsys):
    code, out, err = run_cli(
        capsys, "measure", "--region", "FR", "--unit", "sample", "--units", "100", "--",
        PY, "-c", "import sys; sum(range(200000)); sys.exit(3)",
    )
    assert code == 3
    for text in ("cpu", "estimated: cpu-time", "operational", "embodied", "total CO2e", "per sample"):
        assert text in out
    (run,) = RunStore.default().list_runs()
    assert (run.kind, run.status, run.exit_code) == ("measure", "failed", 3)
    assert run.command.startswith(PY)


def test_measure_json(capsys):
    code, out, _ = run_cli(capsys, "measure", "--json", "--intensity", "100", "--pue", "1.0", "--", PY, "-c", "pass")
    assert code == 0
    data = json.loads(out.strip().splitlines()[-1])
    fp = data["footprint"]
    assert data["exit_code"] == 0 and fp["intensity_g_per_kwh"] == 100.0 and fp["pue"] == 1.0
    assert fp["operational_g"] == pytest.approx(fp["energy_j"] / 3.6e6 * 100.0)
    assert RunStore.default().get_run(data["run_id"]).status == "completed"


def test_console_script_passes_the_exit_code_through(tmp_path):
    lowcarb = Path(sys.executable).with_name("lowcarb")
    proc = subprocess.run(
        [str(lowcarb), "measure", "--", PY, "-c", "raise SystemExit(5)"], capture_output=True, text=True
    )
    assert proc.returncode == 5, proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["measure", "--region", "Frnace", "--", "true"], "unknown region 'Frnace'; close matches: FR (France)"),
        (["measure", "--pue", "0.8", "--", "true"], "PUE must be >= 1.0"),
        (["measure", "--cpu-power-w", "-10", "--", "true"], "CPU power must be > 0 W"),
        (["measure", "--intensity", "-1", "--", "true"], "grid intensity must be >= 0"),
        (["measure"], "no command given"),
        (["measure", "--", "lowcarb-no-such-cmd"], "command not found"),
        (["measure", "--units", "5", "--", "true"], "--units needs --unit"),
        (["show", "deadbeef"], "no run 'deadbeef'"),
        (["regions", "Atlantis"], "unknown region 'Atlantis'"),
    ],
)
def test_bad_input_gives_one_line_error(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert err.startswith(f"lowcarb {argv[0]}: error: ")


def test_unwritable_and_corrupted_store(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "measure", "--store", str(blocker / "runs.db"), "--", "true")
    assert code == 2 and "cannot create the run store folder" in err and err.count("\n") == 1
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 100)
    code, _, err = run_cli(capsys, "runs", "--store", str(bad))
    assert code == 2 and "corrupted" in err and bad.read_bytes() == b"garbage" * 100


def test_runs_show_export(capsys, tmp_path):
    store_path = str(tmp_path / "s.db")
    for i in range(2):
        assert run_cli(capsys, "measure", "--store", store_path, "--name", f"job{i}", "--", "true")[0] == 0
    code, out, _ = run_cli(capsys, "runs", "--store", store_path)
    assert code == 0 and "job0" in out and "job1" in out
    runs = RunStore(store_path).list_runs()
    code, out, _ = run_cli(capsys, "show", runs[0].run_id[:6], "--store", store_path)
    assert code == 0 and runs[0].run_id in out and "embodied" in out
    code, out, _ = run_cli(capsys, "show", runs[0].run_id, "--json", "--store", store_path)
    assert json.loads(out)["runs"][0]["run_id"] == runs[0].run_id
    out_file = tmp_path / "e.csv"
    code, _, err = run_cli(capsys, "export", "--format", "csv", "--out", str(out_file), "--store", store_path)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out_file.read_text())))
    assert len(rows) == 2 and list(rows[0])[: len(CODECARBON_COLUMNS)] == CODECARBON_COLUMNS
    code, out, _ = run_cli(capsys, "export", "--store", store_path)
    assert len(json.loads(out)["runs"]) == 2


def test_regions(capsys):
    code, out, _ = run_cli(capsys, "regions", "gcp:europe-west")
    assert code == 0 and "gcp:europe-west1" in out
    code, out, _ = run_cli(capsys, "regions", "--json", "france")
    found = {g["key"]: g for g in json.loads(out)}
    assert found["FR"]["iso3"] == "FRA" and found["FR"]["intensity_g_per_kwh"] > 0
    assert all("fran" in g["name"].lower() for g in found.values())


@pytest.mark.parametrize("verb", ["measure", "runs", "show", "export", "regions"])
def test_help_on_every_verb(capsys, verb):
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out
