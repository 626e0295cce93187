"""run_search on the embedded SQLite default: trials, Pareto front, pruning, footprints."""

from __future__ import annotations

import json
import sqlite3

import pytest
from _toy import default_pruning, final_quality, toy_config, toy_trial

from lowcarb.search.hpo import (
    Constraint,
    Objective,
    SearchConfig,
    SearchResult,
    run_search,
)
from lowcarb.search.space import FloatParam, SearchSpace


def test_sqlite_default_in_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    result = run_search(toy_trial(), toy_config(n_trials=6), run_dir=run_dir)
    db = run_dir / "search.db"
    assert db.exists()
    # Optuna's own tables hold the trials: the storage is real, not a side file.
    with sqlite3.connect(db) as con:
        (n,) = con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()
    assert n == 6
    assert result.counts() == {"complete": 6}
    assert (run_dir / "search.json").exists()
    # Every trial carries its own measured footprint and the metrics it returned.
    for t in result.trials:
        assert t.footprint is not None and t.footprint["duration_s"] > 0
        assert t.footprint["energy_j"] > 0 and t.footprint["co2_g"] > 0
        assert t.metrics["accuracy"] == pytest.approx(final_quality(t.params))
        assert t.metrics["trial_energy_j"] == pytest.approx(t.footprint["energy_j"])


def test_joining_the_same_run_continues_the_study(tmp_path):
    run_search(toy_trial(), toy_config(n_trials=3), run_dir=tmp_path)
    again = run_search(toy_trial(), toy_config(n_trials=3), run_dir=tmp_path)
    assert again.counts() == {"complete": 3}  # already finished: nothing re-run
    more = run_search(toy_trial(), toy_config(n_trials=5), run_dir=tmp_path)
    assert more.counts() == {"complete": 5}
    assert sorted(t.number for t in more.trials) == [0, 1, 2, 3, 4]


def test_pareto_front_is_non_dominated_and_chosen_is_on_it(tmp_path):
    result = run_search(toy_trial(), toy_config(n_trials=10), run_dir=tmp_path)
    front = [result.trial(n) for n in result.pareto]
    assert front
    complete = [t for t in result.trials if t.state == "complete"]
    for p in front:
        for q in complete:
            dominates = (
                q.metrics["accuracy"] >= p.metrics["accuracy"]
                and q.metrics["cost"] <= p.metrics["cost"]
                and (q.metrics["accuracy"], q.metrics["cost"])
                != (p.metrics["accuracy"], p.metrics["cost"])
            )
            assert not dominates, (p.number, q.number)
    # every trial off the front is dominated by one on it
    for q in complete:
        if q.number not in result.pareto:
            assert any(
                p.metrics["accuracy"] >= q.metrics["accuracy"]
                and p.metrics["cost"] <= q.metrics["cost"]
                for p in front
            )
    assert result.chosen in result.pareto
    best_q = max(p.metrics["accuracy"] for p in front)
    chosen = result.trial(result.chosen)
    assert chosen.metrics["accuracy"] >= best_q - 0.005
    close = [p for p in front if p.metrics["accuracy"] >= best_q - 0.005]
    assert chosen.metrics["cost"] == min(p.metrics["cost"] for p in close)


def test_result_round_trips_through_json(tmp_path):
    result = run_search(toy_trial(), toy_config(n_trials=4), run_dir=tmp_path)
    loaded = SearchResult.load(tmp_path / "search.json")
    assert loaded == result
    json.loads((tmp_path / "search.json").read_text())  # plain JSON


def test_pruned_trials_keep_their_footprint_and_count_in_the_total(tmp_path):
    config = toy_config(n_trials=12, pruning=default_pruning(), startup_trials=12)
    result = run_search(toy_trial(busy_s=0.02), config, run_dir=tmp_path)
    counts = result.counts()
    assert counts.get("pruned", 0) >= 1, counts
    assert counts["complete"] + counts["pruned"] == 12
    pruned = [t for t in result.trials if t.state == "pruned"]
    for t in pruned:
        assert t.footprint is not None and t.footprint["energy_j"] > 0
        assert t.metrics == {}  # stopped: no final metrics
        assert max(t.intermediate) < 3  # stopped before the last epoch
    total = result.total
    assert total["energy_j"] == pytest.approx(sum(t.footprint["energy_j"] for t in result.trials))
    assert total["energy_j_by_state"]["pruned"] == pytest.approx(
        sum(t.footprint["energy_j"] for t in pruned)
    )
    assert total["trials_measured"] == 12
    assert total["trials_without_footprint"] == []


def test_failed_trials_keep_their_footprint_and_the_search_goes_on(tmp_path):
    inner = toy_trial()

    def flaky(ctx):
        if ctx.number in (1, 3):
            raise RuntimeError("out of memory (scripted)")
        return inner(ctx)

    result = run_search(flaky, toy_config(n_trials=4, max_failed_trials=3), run_dir=tmp_path)
    failed = [t for t in result.trials if t.state == "failed"]
    assert [t.number for t in failed] == [1, 3]
    for t in failed:
        assert "out of memory" in t.error
        assert t.footprint is not None and t.footprint["duration_s"] > 0
    assert result.counts()["complete"] == 4
    assert result.total["energy_j_by_state"]["failed"] > 0
    assert result.total["trials_measured"] == 6


def test_a_trial_function_that_always_fails_stops_the_search(tmp_path):
    def broken(ctx):
        raise KeyError("no such column")

    with pytest.raises(ValueError, match="3 trials failed.*no such column"):
        run_search(broken, toy_config(n_trials=5, max_failed_trials=3), run_dir=tmp_path)


def test_missing_objective_metric_is_a_clear_error(tmp_path):
    config = toy_config(
        objectives=(Objective("accuracy", "maximize"), Objective("latency_ms", "minimize"))
    )
    with pytest.raises(ValueError, match="no metric 'latency_ms'.*accuracy, cost"):
        run_search(toy_trial(), config, run_dir=tmp_path)


def test_single_objective_under_a_constraint(tmp_path):
    # maximise accuracy subject to cost <= 16: the chosen trial is the best feasible one.
    config = toy_config(
        objectives=(Objective("accuracy", "maximize"),),
        constraints=(Constraint("cost", 16.0),),
        n_trials=10,
    )
    result = run_search(toy_trial(), config, run_dir=tmp_path)
    feasible = [t for t in result.trials if t.feasible]
    infeasible = [t for t in result.trials if t.state == "complete" and not t.feasible]
    assert all(t.metrics["cost"] <= 16 for t in feasible)
    assert all(t.metrics["cost"] > 16 for t in infeasible)
    assert feasible
    chosen = result.trial(result.chosen)
    assert chosen.feasible
    assert chosen.metrics["accuracy"] == max(t.metrics["accuracy"] for t in feasible)


def test_footprint_cost_metrics_can_be_objectives(tmp_path):
    config = SearchConfig(
        space=SearchSpace.of({"train.x": FloatParam(0.0, 1.0)}),
        objectives=(Objective("accuracy", "maximize"), Objective("trial_energy_j", "minimize")),
        n_trials=3,
        pruning=None,
    )

    def trial(ctx):
        return {"accuracy": 1 - ctx.params["train.x"]}

    result = run_search(trial, config, run_dir=tmp_path)
    assert all(t.metrics["trial_energy_j"] > 0 for t in result.trials)


def test_same_seed_same_candidates(tmp_path):
    a = run_search(toy_trial(), toy_config(n_trials=5), run_dir=tmp_path / "a")
    b = run_search(toy_trial(), toy_config(n_trials=5), run_dir=tmp_path / "b")
    assert [t.params for t in a.trials] == [t.params for t in b.trials]


def test_initial_params_are_run_first(tmp_path):
    fixed = [{"train.x": 0.3, "model.width": 64}, {"train.x": 0.9, "model.width": 8}]
    result = run_search(toy_trial(), toy_config(n_trials=3), run_dir=tmp_path, initial_params=fixed)
    assert [result.trial(0).params, result.trial(1).params] == fixed


def test_config_validation():
    with pytest.raises(ValueError, match="at least one objective"):
        toy_config(objectives=())
    with pytest.raises(ValueError, match="twice"):
        toy_config(objectives=(Objective("a", "maximize"), Objective("a", "minimize")))
    with pytest.raises(ValueError, match="n_trials"):
        toy_config(n_trials=0)
    with pytest.raises(ValueError, match="direction"):
        Objective("accuracy", "max")
    with pytest.raises(ValueError, match="grace_s"):
        toy_config(heartbeat_s=5, grace_s=5)
