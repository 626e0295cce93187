"""Search spaces and the recipe's search section: typed ranges, validated at the edge."""

from __future__ import annotations

import math

import optuna
import pytest
from pydantic import ValidationError

from lowcarb.search.section import SearchSection
from lowcarb.search.space import CategoricalParam, FloatParam, IntParam, SearchSpace, suggest


def test_suggest_respects_every_range():
    space = SearchSpace.of(
        {
            "train.lr": FloatParam(1e-4, 1e-1, log=True),
            "model.hidden_dim": IntParam(16, 128, step=16),
            "train.batch_size": CategoricalParam((16, 32, 64)),
            "quantize": CategoricalParam((False, True)),
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_lr = []
    for _ in range(40):
        trial = study.ask()
        values = suggest(trial, space)
        assert list(values) == space.names()
        assert 1e-4 <= values["train.lr"] <= 1e-1
        assert values["model.hidden_dim"] in range(16, 129, 16)
        assert values["train.batch_size"] in (16, 32, 64)
        assert values["quantize"] in (False, True)
        seen_lr.append(values["train.lr"])
        study.tell(trial, 0.0)
    # log-uniform: about half the draws fall below the geometric middle (1e-2.5)
    below = sum(math.log10(v) < -2.5 for v in seen_lr)
    assert 10 <= below <= 30


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FloatParam(1.0, 0.1), "low < high"),
        (lambda: FloatParam(0.0, 1.0, log=True), "log range needs low > 0"),
        (lambda: FloatParam(0.0, float("inf")), "finite"),
        (lambda: FloatParam(1e-3, 1.0, log=True, step=0.1), "not both"),
        (lambda: IntParam(4, 4), "low < high"),
        (lambda: IntParam(1, 8, step=0), "step must be >= 1"),
        (lambda: IntParam(0, 8, log=True), "log int range"),
        (lambda: CategoricalParam(()), "at least one choice"),
        (lambda: CategoricalParam((1, 1)), "repeat"),
        (lambda: CategoricalParam(([1],)), "plain values"),
        (lambda: SearchSpace(()), "empty"),
        (lambda: SearchSpace((("a", IntParam(0, 1)), ("a", IntParam(0, 2)))), "named twice"),
        (lambda: SearchSpace((("train..lr", IntParam(0, 1)),)), "dotted path"),
    ],
)
def test_bad_ranges_fail_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


SECTION = {
    "n_trials": 12,
    "objectives": [
        {"metric": "dev_accuracy", "direction": "maximize"},
        {"metric": "per1k_total_g", "direction": "minimize"},
    ],
    "constraints": [{"metric": "latency_b1_p50_ms", "max": 5.0}],
    "params": {
        "train.lr": {"float": [1e-4, 1e-2], "log": True},
        "model.hidden_dim": {"int": [16, 128], "step": 16},
        "train.batch_size": {"choices": [16, 32]},
    },
    "pruning": {"warmup_steps": 2, "min_trials": 3},
    "sampler": "nsga2",
}


def test_section_becomes_a_typed_config():
    config = SearchSection.model_validate(SECTION).to_config()
    assert config.n_trials == 12
    assert [o.metric for o in config.objectives] == ["dev_accuracy", "per1k_total_g"]
    assert config.constraints[0].max_value == 5.0
    assert dict(config.space.params) == {
        "train.lr": FloatParam(1e-4, 1e-2, log=True),
        "model.hidden_dim": IntParam(16, 128, step=16),
        "train.batch_size": CategoricalParam((16, 32)),
    }
    assert (config.pruning.warmup_steps, config.pruning.min_trials) == (2, 3)
    assert config.sampler == "nsga2"


def test_pruning_can_be_switched_off_or_defaulted():
    off = SearchSection.model_validate({**SECTION, "pruning": False}).to_config()
    assert off.pruning is None
    on = SearchSection.model_validate({**SECTION, "pruning": True}).to_config()
    assert on.pruning is not None and on.pruning.min_trials == 4


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"params": {"train.lr": {"float": [1e-2, 1e-4]}}}, "low < high"),
        ({"params": {"train.lr": {"float": [0, 1], "log": True}}}, "low > 0"),
        ({"params": {"train.lr": {}}}, "exactly one of"),
        ({"params": {"train.lr": {"int": [1, 4], "choices": [1]}}}, "exactly one of"),
        ({"params": {"x": {"choices": [1, 2], "log": True}}}, "no log or step"),
        ({"params": {"x": {"int": [1, 8], "step": 1.5}}}, "integer step"),
        ({"params": {}}, "at least 1"),
        ({"objectives": []}, "at least 1"),
        ({"objectives": [{"metric": "a", "direction": "up"}]}, "maximize"),
        ({"sampler": "grid"}, "tpe"),
        ({"n_trials": 0}, "greater than or equal to 1"),
        ({"pruning": {"warmup": 1}}, "Extra inputs"),
        ({"typo_field": 1}, "Extra inputs"),
    ],
)
def test_bad_sections_are_rejected_with_the_reason(change, match):
    with pytest.raises(ValidationError, match=match):
        SearchSection.model_validate({**SECTION, **change})


def test_section_round_trips_through_its_dump():
    section = SearchSection.model_validate(SECTION)
    again = SearchSection.model_validate(section.model_dump(mode="json", by_alias=True))
    assert again == section
    assert again.to_config() == section.to_config()
