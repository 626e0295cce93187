"""A median pruner that also works for multi-objective studies.

Optuna's pruners read `trial.report()` values, which Optuna refuses for multi-objective studies, so
no library prunes those. This pruner keeps each trial's intermediate *quality* (one number per
step, whatever the trial's cost) in the trial's user attributes, which every worker of a
distributed study can read through the storage, and stops a trial whose quality at a step is worse
than the median of the completed trials at the same step: Optuna's MedianPruner rule, applied to
the quality objective only. A cheap but poor trial is stopped too: the search must not spend
energy on it; its cost is not known until it finishes anyway.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from lowcarb.errors import ConfigError

# The user attribute holding {str(step): quality}; JSON keys are strings.
INTERMEDIATE_ATTR = "lowcarb.intermediate"


@dataclass(frozen=True)
class PruningConfig:
    """When to stop a poor trial.

    warmup_steps: steps reported before a trial may be stopped (early steps are noisy).
    min_trials: completed trials needed before anyone is stopped (a median of 1 is not a median).
    """

    warmup_steps: int = 1
    min_trials: int = 4

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.min_trials < 1:
            raise ConfigError(f"min_trials must be >= 1, got {self.min_trials}")


def intermediate_values(trial: FrozenTrial) -> dict[int, float]:
    """The quality values a trial reported, by step."""
    raw = trial.user_attrs.get(INTERMEDIATE_ATTR) or {}
    return {int(step): float(value) for step, value in raw.items()}


class MultiObjectiveMedianPruner(BasePruner):
    """Stop a trial whose quality at step s is worse than the median of completed trials at s.

    `direction` is the quality's direction ("maximize" for accuracy, "minimize" for a loss).
    Works for single- and multi-objective studies alike, because it never reads Optuna's
    single-objective intermediate values.
    """

    def __init__(
        self,
        config: PruningConfig = PruningConfig(),
        direction: Literal["maximize", "minimize"] = "maximize",
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        self.config = config
        self.direction = direction

    def should_stop(self, study: optuna.Study, step: int, value: float) -> bool:
        """Whether a trial that reached `value` at `step` should stop now."""
        if math.isnan(value):
            return True  # a diverged trial is never worth finishing
        if step < self.config.warmup_steps:
            return False
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(completed) < self.config.min_trials:
            return False
        at_step = [v for t in completed if (v := intermediate_values(t).get(step)) is not None]
        if not at_step:
            return False
        median = statistics.median(at_step)
        return value < median if self.direction == "maximize" else value > median

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Optuna's pruner protocol: judge the trial's latest reported step."""
        values: Mapping[int, float] = intermediate_values(trial)
        if not values:
            return False
        step = max(values)
        return self.should_stop(study, step, values[step])
