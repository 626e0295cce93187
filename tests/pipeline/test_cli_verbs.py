"""`lowcarb run`, `lowcarb report`, `lowcarb compare`: exit codes, files, one-line errors."""

from pathlib import Path

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


def test_failed_run_exit_status_and_message(tmp_path, capsys):
    code = main(["run", "--set", "model.name=transformer", "--set",
                 f"data.train={tmp_path / 'missing.csv'}", "--out", str(tmp_path), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "missing.csv" in err and "marked failed" in err
