"""A small self-contained search problem for the search tests: no torch, a few ms per trial.

quality rises with `x` towards 0.3 and with the epochs trained; cost grows with `width`, so the
Pareto front trades one against the other. `sleep_s` makes trials last long enough for the
distributed tests (heartbeats, kill -9).
"""

from __future__ import annotations

import time

from lowcarb.search.hpo import Objective, SearchConfig
from lowcarb.search.pruning import PruningConfig
from lowcarb.search.space import CategoricalParam, FloatParam, SearchSpace

EPOCHS = 4


def toy_space() -> SearchSpace:
    return SearchSpace.of(
        {"train.x": FloatParam(0.0, 1.0), "model.width": CategoricalParam((8, 16, 32, 64))}
    )


def toy_config(**overrides) -> SearchConfig:
    values = dict(
        space=toy_space(),
        objectives=(Objective("accuracy", "maximize"), Objective("cost", "minimize")),
        n_trials=8,
        pruning=None,
        seed=0,
        startup_trials=4,
        heartbeat_s=1,
        grace_s=3,
    )
    values.update(overrides)
    return SearchConfig(**values)


def final_quality(params: dict) -> float:
    return 1.0 - (params["train.x"] - 0.3) ** 2 - 0.1 / params["model.width"]


def toy_trial(sleep_s: float = 0.0, busy_s: float = 0.0):
    """A trial function reporting a rising quality each epoch."""

    def run(ctx):
        q = final_quality(ctx.params)
        for epoch in range(EPOCHS):
            if busy_s:
                end = time.process_time() + busy_s / EPOCHS
                while time.process_time() < end:
                    pass
            if sleep_s:
                time.sleep(sleep_s / EPOCHS)
            ctx.report(epoch, q * (epoch + 1) / EPOCHS)
        return {"accuracy": q, "cost": float(ctx.params["model.width"])}

    return run


def default_pruning() -> PruningConfig:
    return PruningConfig(warmup_steps=1, min_trials=3)
