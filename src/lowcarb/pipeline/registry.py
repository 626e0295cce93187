"""The stage registry: recipe stage names -> (function, pydantic settings model).

A stage is `fn(ctx: RunContext, cfg: Config) -> RunContext`. Registration happens at import time of
the module that defines the stage; `lowcarb.pipeline.stages` imports every module in its folder, so a
new stage is one new file and never an edit to the runner.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

StageFn = Callable[[Any, Any], Any]
# check(ctx, cfg) raises a LowcarbError when the stage cannot work on the run's model or data.
StageCheck = Callable[[Any, Any], None]


class StageConfig(BaseModel):
    """Base for stage settings: frozen, and unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainOverrides(StageConfig):
    """The one training-overrides block of a stage that trains: unset values come from the
    recipe's `train:` section; set here, they apply to this stage only (`ctx.fit(cfg)`)."""

    epochs: int | None = Field(default=None, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)

    def train_overrides(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in TrainOverrides.model_fields}


class TechniqueStage(StageConfig):
    """Base of a stage that embeds a technique's config (``technique_fields``): ``technique()``
    builds the config from the stage's fields, and validation builds it once, so the config's own
    checks run at the edge, when the recipe is read."""

    technique_type: ClassVar[type | None] = None

    def technique(self) -> Any:
        assert self.technique_type is not None
        return self.technique_type(**technique_values(self, self.technique_type))

    @model_validator(mode="after")
    def _technique_validates(self) -> TechniqueStage:
        self.technique()
        return self


def technique_fields(
    *config_types: type,
    include: Iterable[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    types: Mapping[str, Any] | None = None,
    unset: bool = False,
) -> type[TechniqueStage]:
    """A TechniqueStage base whose fields are the technique configs' dataclass fields: their types
    and defaults are read from the dataclasses, so a stage never copies them (the technique
    validates them when the stage builds its config). ``include`` keeps only those names;
    ``defaults`` and ``types`` change a field's default or type for the recipe; ``unset`` makes
    every field default to None, "not given" (a stage over several configs, such as quantize's
    workflows, which then overrides ``technique()``)."""
    wanted = set(include) if include is not None else None
    fields: dict[str, Any] = {}
    for config_type in config_types:
        hints = get_type_hints(config_type)
        for f in dataclasses.fields(config_type):
            if f.name in fields or (wanted is not None and f.name not in wanted):
                continue
            annotation = (types or {}).get(f.name, hints[f.name])
            if unset:
                fields[f.name] = (annotation | None, None)
                continue
            default: Any = ...  # pydantic's "required": a dataclass field without a default
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            fields[f.name] = (annotation, (defaults or {}).get(f.name, default))
    name = "".join(t.__name__ for t in config_types) + "Fields"
    base = create_model(name, __base__=TechniqueStage, **fields)
    base.technique_type = config_types[0] if len(config_types) == 1 else None
    return base


def technique_values(settings: BaseModel, config_type: type, *, skip_unset: bool = False) -> dict[str, Any]:
    """The stage settings that are fields of ``config_type`` (None ones left out with skip_unset)."""
    names = {f.name for f in dataclasses.fields(config_type)}
    values = {k: getattr(settings, k) for k in names if k in type(settings).model_fields}
    return {k: v for k, v in values.items() if not (skip_unset and v is None)}


@dataclass(frozen=True)
class StageSpec:
    name: str
    fn: StageFn
    config_model: type[BaseModel]
    # A stage that changes the model is followed by a full evaluation, so every model the run
    # produced appears in the report side by side (accuracy, latency, CO2e per 1,000 inferences).
    changes_model: bool
    description: str
    # Called by the runner once the model is built and before any stage runs, so that a stage
    # that cannot work on this model (AutoDistil on a non-BERT model) fails before training.
    check: StageCheck | None = None
    # The recipe tasks the stage works on (pipeline.tasks); a recipe naming it for another task
    # is rejected before the run starts.
    tasks: tuple[str, ...] = ("sequence-classification",)


_REGISTRY: dict[str, StageSpec] = {}


def register_stage(
    name: str,
    config_model: type[BaseModel] = StageConfig,
    *,
    changes_model: bool = True,
    check: StageCheck | None = None,
    tasks: tuple[str, ...] = ("sequence-classification",),
) -> Callable[[StageFn], StageFn]:
    """Decorator: register `fn` as the recipe stage `name`, with settings validated by `config_model`.

    `check(ctx, cfg)`, when given, runs before any stage of the run and raises a LowcarbError
    when this stage cannot work on the model or data (checked up front, not after training).
    `tasks` lists the recipe tasks the stage supports ("sequence-classification", "causal-lm").
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"stage name {name!r} must be letters, digits, '-' or '_'")
    if not (isinstance(config_model, type) and issubclass(config_model, BaseModel)):
        raise ValueError(
            f"stage {name!r}: config_model must be a pydantic BaseModel subclass "
            f"(derive from lowcarb.pipeline.StageConfig), got {config_model!r}"
        )

    def decorate(fn: StageFn) -> StageFn:
        existing = _REGISTRY.get(name)
        if (
            existing is not None
            and existing.fn is not fn
            and (
                existing.fn.__module__,
                existing.fn.__qualname__,
            )
            != (fn.__module__, fn.__qualname__)
        ):
            raise ValueError(
                f"stage {name!r} is already registered by {existing.fn.__module__}; "
                "pick another name"
            )
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = StageSpec(
            name, fn, config_model, changes_model, doc[0] if doc else "", check, tuple(tasks)
        )
        return fn

    return decorate


def _ensure_loaded() -> None:
    # Importing the stages package registers the built-in and technique stages.
    from lowcarb.pipeline import stages  # noqa: F401


def get_stage(name: str) -> StageSpec:
    """The registered stage `name`; a ValueError lists the known names (and any that failed to load)."""
    _ensure_loaded()
    spec = _REGISTRY.get(name)
    if spec is not None:
        return spec
    from lowcarb.pipeline.stages import import_errors

    hint = difflib.get_close_matches(name, list(_REGISTRY), n=1)
    msg = f"unknown stage {name!r}"
    if hint:
        msg += f" (did you mean {hint[0]!r}?)"
    msg += f"; known stages: {', '.join(sorted(_REGISTRY)) or 'none'}"
    broken = import_errors()
    if broken:
        msg += "; stage modules that failed to import: " + "; ".join(
            f"{mod}: {err}" for mod, err in sorted(broken.items())
        )
    raise ValueError(msg)


def registered_stages() -> dict[str, StageSpec]:
    """All registered stages by name."""
    _ensure_loaded()
    return dict(_REGISTRY)
