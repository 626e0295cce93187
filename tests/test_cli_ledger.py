"""The ledger verbs: measure, runs, show, export, regions; exit codes and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lowcarb.cli import main
from lowcarb.store import CODECARBON_COLUMNS, RunStore

PY = sys.executable


@pytest.fixture(autouse=True)
def _no_rapl(monkeypatch, tmp_path):
    # Deterministic meters whatever the machine: the CPU-time estimate.
    monkeypatch.setenv("LOWCARB_POWERCAP_ROOT", str(tmp_path / "no-powercap"))
    monkeypatch.setenv("LOWCARB_SAMPLE_INTERVAL_S", "0.1")


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
