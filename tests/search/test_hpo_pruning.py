"""The multi-objective median pruner on scripted intermediate values."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from lowcarb.search.pruning import INTERMEDIATE_ATTR, MultiObjectiveMedianPruner, PruningConfig


def _study_with(curves: list[dict[int, float]], state=TrialState.COMPLETE) -> optuna.Study:
    # A two-objective study (quality, cost): Optuna itself cannot prune it.
    study = optuna.create_study(directions=["maximize", "minimize"])
    for curve in curves:
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                values=[max(curve.values()), 1.0] if state == TrialState.COMPLETE else None,
                user_attrs={INTERMEDIATE_ATTR: {str(k): v for k, v in curve.items()}},
            )
        )
    return study


CURVES = [
    {0: 0.2, 1: 0.5, 2: 0.7},
    {0: 0.3, 1: 0.6, 2: 0.8},
    {0: 0.4, 1: 0.7, 2: 0.9},
]


def test_stops_below_median_and_keeps_at_or_above():
    study = _study_with(CURVES)
    pruner = MultiObjectiveMedianPruner(PruningConfig(warmup_steps=1, min_trials=3))
    # median at step 1 is 0.6
    assert pruner.should_stop(study, 1, 0.59)
    assert not pruner.should_stop(study, 1, 0.6)
    assert not pruner.should_stop(study, 1, 0.65)
    # median at step 2 is 0.8
    assert pruner.should_stop(study, 2, 0.75)


def test_warmup_protects_early_steps():
    study = _study_with(CURVES)
    pruner = MultiObjectiveMedianPruner(PruningConfig(warmup_steps=2, min_trials=3))
    assert not pruner.should_stop(study, 0, 0.0)
    assert not pruner.should_stop(study, 1, 0.0)
    assert pruner.should_stop(study, 2, 0.0)


def test_needs_min_completed_trials():
    study = _study_with(CURVES[:2])
    pruner = MultiObjectiveMedianPruner(PruningConfig(warmup_steps=0, min_trials=3))
    assert not pruner.should_stop(study, 1, 0.0)
    # Pruned trials do not count towards the median or the minimum (as in Optuna's MedianPruner).
    for curve in CURVES:
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.PRUNED,
                user_attrs={INTERMEDIATE_ATTR: {str(k): v for k, v in curve.items()}},
            )
        )
    assert not pruner.should_stop(study, 1, 0.0)


def test_step_nobody_reached_is_not_judged():
    study = _study_with(CURVES)
    pruner = MultiObjectiveMedianPruner(PruningConfig(warmup_steps=0, min_trials=1))
    assert not pruner.should_stop(study, 7, 0.0)


def test_minimize_direction_for_a_loss():
    losses = [{1: 0.9}, {1: 0.5}, {1: 0.3}]
    study = _study_with(losses)
    pruner = MultiObjectiveMedianPruner(PruningConfig(warmup_steps=0, min_trials=3), "minimize")
    assert pruner.should_stop(study, 1, 0.6)
    assert not pruner.should_stop(study, 1, 0.4)


def test_nan_quality_is_always_stopped():
    study = _study_with([])
    pruner = MultiObjectiveMedianPruner(PruningConfig(warmup_steps=5, min_trials=10))
    assert pruner.should_stop(study, 0, math.nan)


def test_optuna_pruner_protocol_reads_latest_step():
    study = _study_with(CURVES)
    pruner = MultiObjectiveMedianPruner(PruningConfig(warmup_steps=0, min_trials=3))
    poor = optuna.trial.create_trial(
        state=TrialState.RUNNING, user_attrs={INTERMEDIATE_ATTR: {"0": 0.9, "1": 0.1}}
    )
    good = optuna.trial.create_trial(
        state=TrialState.RUNNING, user_attrs={INTERMEDIATE_ATTR: {"0": 0.0, "1": 0.9}}
    )
    assert pruner.prune(study, poor)
    assert not pruner.prune(study, good)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="warmup_steps"):
        PruningConfig(warmup_steps=-1)
    with pytest.raises(ValueError, match="min_trials"):
        PruningConfig(min_trials=0)
    with pytest.raises(ValueError, match="direction"):
        MultiObjectiveMedianPruner(direction="up")
