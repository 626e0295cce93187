"""The `search` section of a recipe, validated at the file edge and turned into a SearchConfig.

search:
  n_trials: 20
  objectives:                       # the first is the quality, the others costs
    - {metric: accuracy, direction: maximize}
    - {metric: co2_g_per_1k_inferences, direction: minimize}
  constraints:                      # optional: feasible when metric <= max
    - {metric: co2_g_per_1k_inferences, max: 0.05}
  params:                           # dotted paths into the recipe
    train.lr: {float: [1.0e-4, 1.0e-2], log: true}
    train.batch_size: {choices: [16, 32, 64]}
    model.options.width: {int: [8, 64], step: 8}
  pruning: {warmup_steps: 1, min_trials: 4}    # or `pruning: false`
  sampler: tpe                      # tpe | nsga2 | random
  seed: 0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lowcarb.search.space import CategoricalParam, FloatParam, IntParam, Param, SearchSpace

if TYPE_CHECKING:
    from lowcarb.search.hpo import SearchConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectiveSection(_Section):
    metric: str = Field(min_length=1)
    direction: Literal["maximize", "minimize"]


class ConstraintSection(_Section):
    metric: str = Field(min_length=1)
    max: float


class PruningSection(_Section):
    warmup_steps: int = Field(default=1, ge=0)
    min_trials: int = Field(default=4, ge=1)


class ParamSection(_Section):
    """Exactly one of `float: [low, high]`, `int: [low, high]` or `choices: [...]`."""

    float_: tuple[float, float] | None = Field(default=None, alias="float")
    int_: tuple[int, int] | None = Field(default=None, alias="int")
    choices: list[bool | int | float | str] | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSection:
        kinds = [
            k
            for k, v in (("float", self.float_), ("int", self.int_), ("choices", self.choices))
            if v is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one of float: [low, high], int: [low, high] or choices: [...]"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        self.to_param()  # range checks (low < high, log needs low > 0, ...)
        return self

    def to_param(self) -> Param:
        if self.float_ is not None:
            return FloatParam(self.float_[0], self.float_[1], log=self.log, step=self.step)
        if self.int_ is not None:
            if self.step is not None and self.step != int(self.step):
                raise ValueError(f"an int range takes an integer step, got {self.step}")
            return IntParam(self.int_[0], self.int_[1], step=int(self.step or 1), log=self.log)
        if self.log or self.step is not None:
            raise ValueError("choices take no log or step")
        return CategoricalParam(tuple(self.choices or ()))


class SearchSection(_Section):
    n_trials: int = Field(default=20, ge=1)
    objectives: list[ObjectiveSection] = Field(min_length=1)
    constraints: list[ConstraintSection] = Field(default_factory=list)
    params: dict[str, ParamSection] = Field(min_length=1)
    pruning: PruningSection | Literal[False] = Field(default_factory=PruningSection)
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    seed: int | None = 0
    startup_trials: int = Field(default=8, ge=1)
    choose_within: float = Field(default=0.005, ge=0)

    @field_validator("pruning", mode="before")
    @classmethod
    def _pruning_on(cls, value: Any) -> Any:
        # `pruning: true` means the default pruning settings.
        return {} if value is True else value

    @model_validator(mode="after")
    def _check(self) -> SearchSection:
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives name a metric twice: {metrics}")
        self.to_config()
        return self

    def to_config(self, **overrides: Any) -> SearchConfig:
        # Imported here: a recipe without a search section never loads Optuna.
        from lowcarb.search.hpo import Constraint, Objective, SearchConfig
        from lowcarb.search.pruning import PruningConfig

        values: dict[str, Any] = {
            "space": SearchSpace(tuple((name, p.to_param()) for name, p in self.params.items())),
            "objectives": tuple(Objective(o.metric, o.direction) for o in self.objectives),
            "n_trials": self.n_trials,
            "constraints": tuple(Constraint(c.metric, c.max) for c in self.constraints),
            "pruning": (
                None
                if self.pruning is False
                else PruningConfig(self.pruning.warmup_steps, self.pruning.min_trials)
            ),
            "sampler": self.sampler,
            "seed": self.seed,
            "startup_trials": self.startup_trials,
            "choose_within": self.choose_within,
        }
        values.update(overrides)
        return SearchConfig(**values)
