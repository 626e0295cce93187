"""`lowcarb run`, `lowcarb report`, `lowcarb compare`: exit codes, files, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lowcarb.cli import main
from lowcarb.store.runstore import RunStore

FAST = ["--set", "train.max_steps=2", "--set", "evaluation.inferences=32"]


def run_ids(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir())


def test_run_report_compare(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", *FAST, "--out", str(out), "--quiet"]) == 0
    assert main(["run", *FAST, "--set", "model.channels=[4, 8]", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "done train" in printed and "report:" in printed and "test acc." in printed
    a, b = sorted(RunStore.default().list_runs(), key=lambda r: r.started_at)[-2:]
    assert run_ids(out) == sorted([a.run_id, b.run_id])

    md = tmp_path / "a.md"
    assert main(["report", a.run_id[:6], "--format", "md", "--out", str(md)]) == 0
    assert md.read_text().startswith("# lowcarb report: default-digits")
    assert main(["report", a.run_id]) == 0
    assert (out / a.run_id / "report.html").exists()

    capsys.readouterr()
    assert main(["compare", a.run_id, b.run_id, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "CO2e / 1k inf." in printed
    compare_md = (tmp_path / f"compare-{a.run_id}-{b.run_id}.md").read_text()
    assert "| params |" in compare_md
    assert (tmp_path / f"compare-{a.run_id}-{b.run_id}.html").exists()


def test_store_flag(tmp_path):
    db = tmp_path / "elsewhere.db"
    assert main(["run", *FAST, "--out", str(tmp_path), "--quiet", "--store", str(db)]) == 0
    (run,) = RunStore(db).list_runs()
    assert run.status == "completed"
    assert RunStore.default().list_runs() == []
    assert main(["report", run.run_id, "--store", str(db), "--out", str(tmp_path / "r.html")]) == 0


def test_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "r.yaml"
    bad.write_text("train:\n  epochz: 1\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("lowcarb run: error: ") and "train.epochz: unknown field" in err

    assert main(["run", "--set", "train.epochs"]) == 2
    assert "--set expects key.path=value" in capsys.readouterr().err

    assert main(["report", "doesnotexist"]) == 2
    assert "no run 'doesnotexist'" in capsys.readouterr().err


def test_device_flags_fail_fast_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    out = tmp_path / "runs"
    text = tmp_path / "r.yaml"
    text.write_text("model: {name: minilm}\ndata: {train: t.csv}\n")
    search = Path(__file__).resolve().parents[2] / "recipes" / "search-digits.yaml"
    mutransfer = tmp_path / "m.yaml"
    mutransfer.write_text("mutransfer:\n  text: t.txt\n  model: {base_width: 8, n_heads: 2}\n"
                          "  proxy_width: 8\n  target_width: 16\n  log2_lrs: [-6]\n")
    verbs = [
        ["run", "--out", str(out)],
        ["search", str(search), "--out", str(out)],
        ["autodistil", str(text), "--flops-budget", "0.5", "--out", str(out)],
        ["parsec", "--out", str(out)],
        ["mutransfer", str(mutransfer), "--runs", str(out), "--out", str(tmp_path / "m.json")],
        ["mup", "coord-check", "mlp", "--out", str(out)],
    ]
    for argv in verbs:
        assert main([*argv, "--device", "cuda"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        assert "asks for a CUDA GPU" in err and "use device cpu, or auto" in err
    assert main(["run", "--precision", "fp8", "--out", str(out)]) == 2
    assert "'fp8' is not a precision" in capsys.readouterr().err
    assert RunStore.default().list_runs() == [] and not out.exists()


def test_failed_run_exit_status_and_message(tmp_path, capsys):
    code = main(["run", "--set", "model.name=transformer", "--set",
                 f"data.train={tmp_path / 'missing.csv'}", "--out", str(tmp_path), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "missing.csv" in err and "marked failed" in err


@pytest.mark.slow
def test_ctrl_c_during_a_stage_keeps_finished_stages(tmp_path):
    """A real SIGINT to `lowcarb run` mid-training: exit 130, finished stages kept, run interrupted."""
    recipe = tmp_path / "long.yaml"
    recipe.write_text(
        "threads: 1\nevaluation: {inferences: 32}\n"
        "stages:\n  - train: {max_steps: 2}\n  - evaluate\n  - train: {epochs: 500}\n"
    )
    env = dict(os.environ, LOWCARB_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lowcarb.cli", "run", str(recipe), "--out", str(tmp_path / "out"),
         "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    metrics = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "out").glob("*/metrics.json"))
        if found and '"label": "evaluate"' in found[0].read_text():
            metrics = found[0]
            break
        time.sleep(0.5)
    assert metrics is not None, proc.communicate(timeout=30)
    time.sleep(2)  # well inside the 500-epoch training stage
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    run = json.loads(metrics.read_text())
    assert run["status"] == "interrupted"
    assert [(s["label"], s["status"]) for s in run["stages"]] == [
        ("setup", "completed"), ("train", "completed"), ("evaluate", "completed"),
        ("train-2", "interrupted"),
    ]
    store = RunStore(tmp_path / "home" / "runs.db")
    assert store.get_run(run["id"]).status == "interrupted"
    assert (metrics.parent / "report.html").exists()
