"""`lowcarb search RECIPE`: a recipe's search section, one stored recipe run per trial."""

from __future__ import annotations

import json

import pytest
import yaml

from lowcarb.cli import main
from lowcarb.store.runstore import RunStore

TINY = {
    "name": "tiny-search",
    "model": {"name": "cnn", "channels": [4, 8], "hidden_dim": 16},
    "data": {"max_train_examples": 192},
    "train": {"epochs": 2, "batch_size": 64, "lr": 3e-3, "seed": 0},
    "evaluation": {"threads": 1, "latency_batch_sizes": [1], "inferences": 64},
    "threads": 1,
    "report": "none",
    "stages": ["train", "evaluate"],
    "search": {
        "n_trials": 2,
        "objectives": [
            {"metric": "dev_accuracy", "direction": "maximize"},
            {"metric": "per1k_total_g", "direction": "minimize"},
        ],
        "params": {
            "model.hidden_dim": {"choices": [8, 16]},
            "train.lr": {"float": [1e-3, 1e-2], "log": True},
        },
        "pruning": {"warmup_steps": 1, "min_trials": 4},
    },
}


def _write(tmp_path, recipe=TINY, name="search.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_cli_search_runs_trials_as_stored_runs_and_reports(tmp_path, capsys):
    code = main(["search", str(_write(tmp_path)), "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "chosen: trial" in out and "The search cost" in out
    (run_dir,) = (tmp_path / "out").iterdir()
    assert (run_dir / "search.db").exists()  # the embedded default: SQLite in the run folder
    html = (run_dir / "search.html").read_text()
    assert 'id="search-pareto"' in html and 'id="search-trials"' in html
    summary = json.loads((run_dir / "search.json").read_text())
    assert summary["counts"] == {"complete": 2}

    store = RunStore.default()  # per-test LOWCARB_HOME (tests/conftest.py)
    search_run = store.get_run(run_dir.name)
    assert search_run.kind == "search" and search_run.status == "completed"
    # one trial window per trial, stored with the search run: its total is what the search cost
    fps = store.footprints(search_run.run_id)
    assert len(fps) == 2
    assert sum(f["energy_j"] for f in fps) == pytest.approx(summary["total"]["energy_j"])
    recipe_runs = [r for r in store.list_runs() if r.kind == "recipe"]
    assert len(recipe_runs) == 2
    for t in summary["trials"]:
        assert {"dev_accuracy", "per1k_total_g", "run_energy_j", "params"} <= set(t["metrics"])
        # the train stage reported dev accuracy after each of the 2 epochs (the pruning hook)
        assert sorted(t["intermediate"]) == ["0", "1"]
    # the sampled values reached the trials' recipes
    assert sorted(r.settings["recipe"]["model"]["hidden_dim"] for r in recipe_runs) == sorted(
        t["params"]["model.hidden_dim"] for t in summary["trials"]
    )


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_unreachable_storage_is_one_line(tmp_path, capsys):
    code = main(["search", str(_write(tmp_path)), "--storage",
                 "postgresql://u:pw@127.0.0.1:1/db", "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    err = _error_line(capsys)
    assert "cannot reach the search storage" in err and "pw" not in err.replace("postgresql", "")
    assert not (tmp_path / "out").exists()  # nothing ran


def test_cli_bad_storage_url_is_one_line(tmp_path, capsys):
    assert main(["search", str(_write(tmp_path)), "--storage", "nonsense"]) == 2
    assert "not a database URL" in _error_line(capsys)


def test_recipe_without_search_section(tmp_path, capsys):
    plain = {k: v for k, v in TINY.items() if k != "search"}
    assert main(["search", str(_write(tmp_path, plain))]) == 2
    assert "no search: section" in _error_line(capsys)


def test_param_path_that_does_not_fit_the_recipe(tmp_path, capsys):
    bad = json.loads(json.dumps(TINY))
    bad["search"]["params"]["train.lrr"] = {"float": [1e-3, 1e-2]}
    assert main(["search", str(_write(tmp_path, bad)), "--out", str(tmp_path / "out")]) == 2
    err = _error_line(capsys)
    assert "search.params.train.lrr" in err and "lr" in err
    assert not (tmp_path / "out").exists()


def test_param_range_outside_the_field_rules(tmp_path, capsys):
    bad = json.loads(json.dumps(TINY))
    bad["search"]["params"]["train.epochs"] = {"int": [0, 3]}  # epochs must be >= 1
    assert main(["search", str(_write(tmp_path, bad))]) == 2
    assert "search.params.train.epochs = 0" in _error_line(capsys)


def test_pruning_needs_a_split_metric(tmp_path, capsys):
    bad = json.loads(json.dumps(TINY))
    bad["search"]["objectives"][0]["metric"] = "accuracy"
    assert main(["search", str(_write(tmp_path, bad))]) == 2
    assert "dev_ or test_ metric" in _error_line(capsys)
