"""benchmarks/text_defaults.py: runs recorded by an earlier results file are imported for --resume,
and a kept run is reused only with the same overrides on an unchanged recipe."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.benchmarks.test_results_files import load

td = load("text_defaults")


def results_file(tmp_path, runs):
    path = tmp_path / "text_defaults.json"
    path.write_text(json.dumps({"benchmark": "text_defaults", "figures": {"runs": runs}}))
    return path


def test_import_writes_one_record_per_run_and_keeps_what_is_already_there(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "lora-minilm-0.json").write_text(json.dumps({"test_accuracy": 0.5, "mine": True}))
    runs = {"text-classification/0": {"test_accuracy": 0.91, "overrides": ["a=1"]},
            "lora-minilm/0": {"test_accuracy": 0.86, "overrides": ["a=1"]}}

    imported = td.import_runs(results_file(tmp_path, runs), keep)

    assert imported == ["text-classification/0"]
    assert json.loads((keep / "text-classification-0.json").read_text()) == runs["text-classification/0"]
    assert json.loads((keep / "lora-minilm-0.json").read_text())["mine"] is True


def test_import_of_a_file_without_runs_says_what_it_needs(tmp_path):
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"benchmark": "lora_minilm", "figures": {}}))
    with pytest.raises(SystemExit, match="figures.runs"):
        td.import_runs(bad, tmp_path / "keep")


def test_a_kept_run_is_reused_only_with_the_same_overrides_and_recipe(tmp_path, monkeypatch):
    head = td._commit()
    record = {"test_accuracy": 0.9, "overrides": ["train.seed=1"], "commit": head, "model_dir": None}
    (tmp_path / "text-classification-1.json").write_text(json.dumps(record))
    monkeypatch.setattr(td, "_recipe_unchanged_since", lambda recipe, commit: commit == head)

    # No model folder is needed to reuse a run's figures.
    assert td._kept("text-classification", 1, ["train.seed=1"], tmp_path, resume=True) == record
    assert td._kept("text-classification", 1, ["train.seed=1"], tmp_path, resume=False) is None
    assert td._kept("text-classification", 1, ["train.seed=2"], tmp_path, resume=True) is None
    record["commit"] = "0000000"
    (tmp_path / "text-classification-1.json").write_text(json.dumps(record))
    assert td._kept("text-classification", 1, ["train.seed=1"], tmp_path, resume=True) is None
    # The real check: git cannot diff against a commit it does not have, so the run is stale.
    monkeypatch.undo()
    assert td._recipe_unchanged_since("text-classification", "0000000") is False
    assert td._recipe_unchanged_since("text-classification", None) is False


def test_a_recipe_is_unchanged_when_only_its_comments_changed(tmp_path, monkeypatch):
    quiet = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
             "-c", "core.hooksPath=/dev/null"]

    def commit(message):
        subprocess.run(["git", "-C", str(tmp_path), *quiet, "commit", "-q", "--allow-empty", "-m", message],
                       check=True, capture_output=True)
        return subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, capture_output=True)
    before_recipe = commit("no recipe yet")
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.parent.mkdir()
    recipe.write_text("# why\ntrain:\n  lr: 1.0e-3\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "recipes/r.yaml"], check=True, capture_output=True)
    head = commit("r")
    monkeypatch.setattr(td, "ROOT", tmp_path)

    recipe.write_text("# why, said better\ntrain:\n  lr: 1.0e-3   # the adapters\n")
    assert td._recipe_unchanged_since("r", head) is True
    assert td._recipe_unchanged_since("r", before_recipe) is False  # the recipe did not exist then
    recipe.write_text("train:\n  lr: 2.0e-3\n")
    assert td._recipe_unchanged_since("r", head) is False
    recipe.write_text("train: [unclosed\n")
    assert td._recipe_unchanged_since("r", head) is False
    recipe.unlink()
    assert td._recipe_unchanged_since("r", head) is False


def test_run_costs_sum_the_stage_windows_and_say_how_training_ended():
    run = {"stages": [
        {"label": "setup", "footprint": {"energy_j": 9.0}, "summary": {}},
        {"label": "train", "footprint": {"energy_j": 1000.5},
         "summary": {"epochs": 6, "steps": 1668, "best_step": 1668, "stopped_early": False,
                     "stop_reason": "epochs", "train_loss": 0.1}},
        {"label": "evaluate", "footprint": None, "summary": None},
    ]}
    costs = td.run_costs(run)
    assert costs["energy_j"] == 1009.5
    assert costs["training"] == {"train": {"epochs": 6, "steps": 1668, "best_step": 1668,
                                           "stopped_early": False, "stop_reason": "epochs"}}
    assert td.run_costs({"stages": []})["energy_j"] is None


def test_a_kept_run_without_costs_gets_them_from_its_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({"stages": [{"label": "train", "footprint": {"energy_j": 5.0}}]}))
    assert td.with_costs({"run_dir": str(run_dir)})["energy_j"] == 5.0
    assert "energy_j" not in td.with_costs({"run_dir": str(tmp_path / "gone")})
    partial = td.with_costs({"run_dir": str(run_dir), "energy_j": 7.0})
    assert partial["energy_j"] == 7.0 and partial["final_model"] == {
        "latency_b1_p50_ms": None, "latency_b32_p50_ms": None, "size_bytes": None}
