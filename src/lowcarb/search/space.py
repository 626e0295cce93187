"""Search spaces: typed ranges over named settings, turned into Optuna suggestions.

A parameter is addressed by a dotted path (`train.lr`, `model.options.width`,
`stages.quantize.enabled`); the search does not know what the path means, the caller applies the
sampled values (the CLI applies them to a recipe). Ranges are checked when the config is built, so
a bad range fails before any trial runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lowcarb.errors import ConfigError

if TYPE_CHECKING:
    import optuna

Scalar = bool | int | float | str


@dataclass(frozen=True)
class FloatParam:
    """A float in [low, high]; `log=True` samples log-uniformly (learning rates)."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ConfigError(
                f"float range needs finite low < high, got low={self.low}, high={self.high}"
            )
        if self.log and self.low <= 0:
            raise ConfigError(f"a log range needs low > 0, got low={self.low}; use log: false")
        if self.log and self.step is not None:
            raise ConfigError("a float range takes either log: true or a step, not both")
        if self.step is not None and self.step <= 0:
            raise ConfigError(f"step must be > 0, got {self.step}")


@dataclass(frozen=True)
class IntParam:
    """An integer in [low, high] (both included), every `step`; `log=True` for wide ranges."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def __post_init__(self) -> None:
        if self.low >= self.high:
            raise ConfigError(f"int range needs low < high, got low={self.low}, high={self.high}")
        if self.step < 1:
            raise ConfigError(f"step must be >= 1, got {self.step}")
        if self.log and (self.low < 1 or self.step != 1):
            raise ConfigError("a log int range needs low >= 1 and step 1")


@dataclass(frozen=True)
class CategoricalParam:
    """One of a fixed list of values (batch size, quantization mode, on/off)."""

    choices: tuple[Scalar, ...]

    def __post_init__(self) -> None:
        if len(self.choices) < 1:
            raise ConfigError("a categorical parameter needs at least one choice")
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ConfigError(f"categorical choices repeat a value: {list(self.choices)}")
        for c in self.choices:
            if not isinstance(c, bool | int | float | str):
                raise ConfigError(
                    f"categorical choices are plain values (number, text, true/false), got {c!r}"
                )


Param = FloatParam | IntParam | CategoricalParam


@dataclass(frozen=True)
class SearchSpace:
    """Named parameters, in a fixed order (the order of suggestion)."""

    params: tuple[tuple[str, Param], ...]

    def __post_init__(self) -> None:
        if not self.params:
            raise ConfigError("the search space is empty; give at least one parameter to search")
        names = [name for name, _ in self.params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"search parameters named twice: {', '.join(dupes)}")
        for name in names:
            if not name or any(not part for part in name.split(".")):
                raise ConfigError(f"search parameter {name!r}: give a dotted path like train.lr")

    @classmethod
    def of(cls, params: Mapping[str, Param]) -> SearchSpace:
        return cls(tuple(params.items()))

    def names(self) -> list[str]:
        return [name for name, _ in self.params]


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Ask Optuna for one value per parameter; returns {path: value}."""
    values: dict[str, Any] = {}
    for name, p in space.params:
        if isinstance(p, FloatParam):
            values[name] = trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, IntParam):
            values[name] = trial.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
        elif isinstance(p, CategoricalParam):
            values[name] = trial.suggest_categorical(name, list(p.choices))
        else:  # pragma: no cover - the dataclasses above are the whole union
            raise TypeError(f"unknown parameter type {type(p).__name__}")
    return values
