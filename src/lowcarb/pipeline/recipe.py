"""Recipes: a YAML file (plus `--set key.path=value` overrides) validated once into typed settings.

A recipe names a model, the data, the training settings and an ordered list of stages:

    name: my-run
    model: {name: minilm}                 # a built-in model name, or a Hugging Face folder path
    data: {train: reviews.csv, text_column: review, label_column: stars}
    train: {epochs: 2, batch_size: 32, lr: 5.0e-5, seed: 0}
    stages:
      - train
      - lowrank: {param_ratio: 0.5}       # a stage with settings, validated by the stage's model
      - evaluate

Everything the user typed is checked here, at the edge: a typo or wrong type is a ConfigError (a
ValueError) that names the file and the field ("recipe.yaml: train.epochs: ..."), never a traceback
from deep inside a run. Past this module, the run sees only typed, frozen values.

Relative `data:` paths (train, dev, test) in a recipe file resolve against the recipe file's folder,
so a recipe and its data move together; a path given with `--set data.train=...` is the user's own
and resolves against the working directory. Files are read within limits (size, nesting, aliases:
see `lowcarb.pipeline.safe_yaml`), and numbers must be of the declared kind
(`lowcarb.pipeline.recipe_types`): `epochs: true` or `epochs: 1e20` is an error, not 1 or 10**20.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from lowcarb.data import DataConfig
from lowcarb.errors import ConfigError
from lowcarb.models import BUILTIN_MODELS, ModelConfig
from lowcarb.pipeline.recipe_errors import format_validation_errors, mark_set, short_repr, shorten
from lowcarb.pipeline.recipe_types import section_problems
from lowcarb.pipeline.registry import get_stage
from lowcarb.pipeline.safe_yaml import load_yaml_file, load_yaml_text
from lowcarb.search.mup.section import MutransferSection
from lowcarb.search.parsec.workflow import ParsecRunConfig
from lowcarb.search.section import SearchSection
from lowcarb.train.config import TrainConfig
from lowcarb.train.device import check_device, check_precision

DEFAULT_RECIPE = "default.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvaluationSection(_Section):
    # Fixed thread count for latency, so numbers from different stages compare.
    threads: int = Field(default=1, gt=0)
    # The splits the evaluation after each model-changing stage scores (an `evaluate` stage names
    # its own). [test] halves the cost where scoring is most of it (generation on a causal LM).
    splits: tuple[Literal["dev", "test"], ...] = Field(default=("dev", "test"), min_length=1)
    # Batch sizes at which latency p50/p95 are measured (the report shows 1 and 32).
    latency_batch_sizes: tuple[Annotated[int, Field(gt=0)], ...] = Field(default=(1, 32), min_length=1)
    # Latency repeats a forward pass until the median's 95 % interval is within +-latency_rel_ci
    # of it, or latency_budget_s seconds are spent (per batch size); the report shows the interval.
    latency_budget_s: float = Field(default=5.0, gt=0)
    latency_rel_ci: float = Field(default=0.03, gt=0, lt=1)
    # The functional unit of the report: the footprint of this many single inferences.
    inferences: int = Field(default=1000, gt=0)
    # A stage whose model loses more accuracy than this (points) against the model before it is
    # flagged in the terminal and the report: its saving costs accuracy.
    accuracy_tolerance_pt: float = Field(default=2.0, ge=0)
    # task: causal-lm. Greedy generation with the KV cache is timed at these batch sizes (time to
    # first token, decode tokens/s); the footprint of `generated_tokens` tokens at the largest
    # one gives energy and CO2e per 1,000 generated tokens; timed runs generate
    # `timing_new_tokens` tokens each; exact-match answers stop at `max_new_tokens`.
    generation_batch_sizes: tuple[Annotated[int, Field(gt=0)], ...] = Field(default=(1, 8), min_length=1)
    generated_tokens: int = Field(default=1000, gt=0)
    timing_new_tokens: int = Field(default=32, ge=2)
    max_new_tokens: int = Field(default=64, gt=0)
    # Timed generations per batch size (medians with their 95 % interval).
    generation_repeats: int = Field(default=5, gt=0)


class CarbonSection(_Section):
    # Unset values fall back to the environment, lowcarb.toml, then the ledger's defaults
    # (see lowcarb.measure.load_carbon_config); values set here win over all of them.
    region: str | None = None
    intensity_g_per_kwh: float | None = Field(default=None, ge=0)
    pue: float | None = Field(default=None, ge=1.0)
    hardware_profile: str | None = None
    embodied_kg: float | None = Field(default=None, ge=0)
    lifetime_years: float | None = Field(default=None, gt=0)
    resource_share: float | None = Field(default=None, gt=0, le=1)
    cpu_power_w: float | None = Field(default=None, gt=0)
    gpu_embodied_kg: float | None = Field(default=None, ge=0)  # one GPU card, kgCO2e
    gpu_lifetime_years: float | None = Field(default=None, gt=0)

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class _RecipeFile(_Section):
    name: str = "run"
    description: str = ""
    # What the model learns (lowcarb.pipeline.tasks): labels of texts or images, or the next
    # token (a causal language model: smollm2-135m, a Hugging Face causal-LM folder, a .gguf).
    task: Literal["sequence-classification", "causal-lm"] = "sequence-classification"
    # The sections are the library's own frozen configs, validated field by field by pydantic:
    # one definition of every setting, and their own checks (__post_init__) run here, at the edge.
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    carbon: CarbonSection = Field(default_factory=CarbonSection)
    stages: list[Any] = Field(default_factory=lambda: ["train", "evaluate"])
    report: Literal["html", "md", "both", "none"] = "both"
    # torch intra-op threads for the whole run (None: torch's default, one per core). Small
    # models gain nothing from more threads, and on a busy machine extra threads only wait.
    threads: int | None = Field(default=None, gt=0)
    # What `lowcarb search` varies and optimises (lowcarb.search.section); `lowcarb run` ignores it.
    search: SearchSection | None = None
    # Where the run computes: auto | cpu | cuda | cuda:N, and in which precision: auto | fp32 |
    # bf16 | fp16. Unset: LOWCARB_DEVICE / LOWCARB_PRECISION, else auto (a GPU in bf16 when there
    # is one, else the CPU in fp32). Checked here; resolved against the machine by the runner.
    device: str | None = None
    precision: str | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        return None if value is None else check_device(value, where="")

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str | None) -> str | None:
        return None if value is None else check_precision(value, where="")
    # The architecture search of `lowcarb parsec` and the sweep of `lowcarb mutransfer` (each
    # command reads its own section; the others ignore it).
    parsec: ParsecRunConfig | None = None
    mutransfer: MutransferSection | None = None


@dataclass(frozen=True)
class StageStep:
    """One validated stage of a recipe."""

    name: str  # the registered stage name
    label: str  # unique within the run: "train", "evaluate", "evaluate-2"
    config: BaseModel

    def settings(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. `source` is the file it came from (or "<packaged default>")."""

    name: str
    description: str
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    evaluation: EvaluationSection
    carbon: CarbonSection
    stages: tuple[StageStep, ...]
    report: str
    source: str
    threads: int | None = None
    overrides: tuple[str, ...] = ()
    search: SearchSection | None = None
    device: str | None = None  # as written (None: not set); the runner resolves it
    precision: str | None = None
    parsec: ParsecRunConfig | None = None
    mutransfer: MutransferSection | None = None
    task: str = "sequence-classification"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able settings; `recipe_from_dict(r.to_dict())` gives the same recipe back."""
        train = _dump(self.train)
        train.pop("precision", None)  # the top-level `precision` sets it
        out = {
            "name": self.name,
            "description": self.description,
            "task": self.task,
            "model": _dump(self.model),
            "data": _dump(self.data),
            "train": train,
            "evaluation": self.evaluation.model_dump(mode="json"),
            "carbon": self.carbon.model_dump(mode="json"),
            "stages": [{s.name: s.settings()} for s in self.stages],
            "report": self.report,
            "threads": self.threads,
            "device": self.device,
            "precision": self.precision,
        }
        if self.search is not None:
            out["search"] = self.search.model_dump(mode="json", by_alias=True)
        if self.parsec is not None:
            out["parsec"] = _dump(self.parsec)
        if self.mutransfer is not None:
            out["mutransfer"] = self.mutransfer.model_dump(mode="json", exclude_unset=True)
        return out


def _dump(config: Any) -> dict[str, Any]:
    return TypeAdapter(type(config)).dump_python(config, mode="json")


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def default_recipe_path() -> Path:
    """The recipe `lowcarb run` uses with no file: digits, the baseline CNN, evaluate, report."""
    return Path(str(resources.files("lowcarb.pipeline") / "recipes" / DEFAULT_RECIPE))


def load_recipe(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe file. `path=None` is the packaged default recipe."""
    label = "<packaged default>" if path is None else str(path)
    raw = read_recipe_file(path)
    return recipe_from_dict(raw, source=label, overrides=overrides)


def read_recipe_file(path: str | Path | None = None) -> Any:
    """The recipe file as plain data (within the size limits), `data:` paths made relative to the
    working directory (they are written relative to the recipe file). No validation yet."""
    source = Path(path) if path is not None else default_recipe_path()
    raw = load_yaml_file(source, "recipe")
    if raw is None:
        raw = {}
    if path is not None and isinstance(raw, Mapping):
        raw = resolve_data_paths(raw, source.parent)
    return raw


def resolve_data_paths(raw: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """`data.train/dev/test` given relative to `folder` (the recipe's), as paths from the cwd."""
    out = dict(raw)
    data = out.get("data")
    if not isinstance(data, Mapping):
        return out
    data = dict(data)
    for key in ("train", "dev", "test"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            expanded = os.path.expanduser(value)
            data[key] = expanded if os.path.isabs(expanded) else os.path.join(folder, expanded)
    out["data"] = data
    return out


def recipe_from_dict(
    raw: Any, *, source: str = "<recipe>", overrides: Sequence[str] = ()
) -> Recipe:
    """Validate a recipe given as plain data (what YAML gives), after applying `overrides`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{source}: a recipe is a mapping (keys like model:, data:, train:, stages:), "
            f"got {type(raw).__name__}"
        )
    data = copy.deepcopy(dict(raw))
    data["stages"] = _normalise_stages(data.get("stages", ["train", "evaluate"]), source)
    set_paths: list[tuple[str, ...]] = []
    for text in overrides:
        keys, value = parse_override(text)
        set_paths.append(tuple(keys))
        apply_override(data, keys, value, source=source)
        if keys and keys[0] == "stages":
            data["stages"] = _normalise_stages(data["stages"], source)

    train_section = data.get("train")
    if isinstance(train_section, Mapping) and "precision" in train_section:
        raise ConfigError(
            f"{source}: train.precision: precision is set at the top level of a recipe "
            "(precision: bf16), or with --precision"
        )
    problems = section_problems({k: v for k, v in data.items() if k != "stages"}, _RecipeFile)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(mark_set(problems, set_paths)))
    try:
        base = _RecipeFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_errors(exc, source, _RecipeFile, set_paths)) from None

    _check_model_for_task(base, source)
    steps = _stage_steps(base, source, set_paths)

    # Every section of the file as validated; the stages as built above, and where it came from.
    sections = {
        f.name: getattr(base, f.name)
        for f in dataclasses.fields(Recipe)
        if f.name in _RecipeFile.model_fields and f.name != "stages"
    }
    return Recipe(**sections, stages=steps, source=source, overrides=tuple(overrides))


def _check_model_for_task(base: _RecipeFile, source: str) -> None:
    """A text model needs text, and a causal-LM task a language model."""
    text_model = str(base.model.name) not in ("cnn", "mlp")
    # causal-lm with no data.train runs the task lowcarb generates (lowcarb.data.lm_generated).
    if text_model and base.data.train is None and base.task != "causal-lm":
        raise ConfigError(
            f"{source}: data.train: model {str(base.model.name)!r} reads text, and no text table "
            "was given; add --set data.train=path/to/train.csv (or .tsv, .jsonl)"
        )

    if base.task == "causal-lm" and str(base.model.name) in BUILTIN_MODELS:
        raise ConfigError(
            f"{source}: model.name: {str(base.model.name)!r} is a classifier; task: causal-lm needs "
            "a language model: smollm2-135m (shipped), a Hugging Face causal-LM folder or a .gguf file"
        )


def _stage_steps(
    base: _RecipeFile, source: str, set_paths: list[tuple[str, ...]]
) -> tuple[StageStep, ...]:
    """Each stage's settings validated by its own config model; repeated stages get -2, -3 labels."""
    steps: list[StageStep] = []
    counts: dict[str, int] = {}
    for index, item in enumerate(base.stages):
        ((name, settings),) = item.items()
        try:
            spec = get_stage(name)
        except ValueError as exc:
            raise ConfigError(f"{source}: stages[{index}]: {shorten(str(exc), 400)}") from None
        problems = section_problems(settings or {}, spec.config_model, f"stages[{index}].{name}")
        if problems:
            raise ConfigError(f"{source}: " + "; ".join(problems))
        try:
            cfg = spec.config_model.model_validate(settings or {})
        except ValidationError as exc:
            raise ConfigError(
                format_validation_errors(
                    exc, source, spec.config_model, set_paths, prefix=f"stages[{index}].{name}"
                )
            ) from None
        if base.task not in spec.tasks:
            raise ConfigError(
                f"{source}: stages[{index}]: stage {name!r} does not support task {base.task!r} "
                f"(it supports {', '.join(spec.tasks)})"
            )
        counts[name] = counts.get(name, 0) + 1
        label_ = name if counts[name] == 1 else f"{name}-{counts[name]}"
        steps.append(StageStep(name=name, label=label_, config=cfg))
    if not steps:
        raise ConfigError(f"{source}: stages: the list is empty; name at least one stage (train)")
    return tuple(steps)


def _normalise_stages(stages: Any, source: str) -> list[dict[str, Any]]:
    """Accept `- train`, `- train: {epochs: 2}` and `- {stage: train, epochs: 2}`; give [{name: {...}}]."""
    if stages is None:
        return []
    if not isinstance(stages, list):
        raise ConfigError(
            f"{source}: stages: expected a list of stage names (for example [train, evaluate]), "
            f"got {type(stages).__name__}"
        )
    out: list[dict[str, Any]] = []
    for index, item in enumerate(stages):
        if isinstance(item, str):
            out.append({item: {}})
        elif isinstance(item, Mapping) and "stage" in item:
            settings = {k: v for k, v in item.items() if k != "stage"}
            if not isinstance(item["stage"], str):
                raise ConfigError(
                    f"{source}: stages[{index}].stage: a stage name, got {short_repr(item['stage'])}"
                )
            out.append({item["stage"]: settings})
        elif isinstance(item, Mapping) and len(item) == 1:
            ((name, settings),) = item.items()
            if settings is None:
                settings = {}
            if not isinstance(name, str):
                raise ConfigError(f"{source}: stages[{index}]: a stage name, got {short_repr(name)}")
            if not isinstance(settings, Mapping):
                raise ConfigError(
                    f"{source}: stages[{index}].{name}: settings must be a mapping "
                    f"(key: value), got {short_repr(settings)}"
                )
            out.append({name: dict(settings)})
        else:
            raise ConfigError(
                f"{source}: stages[{index}]: write a stage as a name (- train) or a name with "
                f"settings (- lowrank: {{param_ratio: 0.5}}), got {short_repr(item)}"
            )
    return out


# ---------------------------------------------------------------------------------------------
# --set key.path=value
# ---------------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"train.epochs=2"` -> (["train", "epochs"], 2). The value follows YAML scalar rules."""
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"--set expects key.path=value (for example train.epochs=2), got {short_repr(text)}"
        )
    keys = key.split(".")
    if any(not k for k in keys):
        raise ConfigError(f"--set {short_repr(text)}: empty part in the key path {short_repr(key)}")
    # The value follows the recipe file's rules (limits, 3e-4 is a number); a YAML error
    # usually means a value that needs quotes.
    try:
        value = load_yaml_text(value_text, f"--set {key}") if value_text.strip() else None
    except ConfigError as exc:
        if "not valid YAML" not in str(exc):
            raise
        raise ConfigError(
            f"--set {short_repr(text)}: the value is not valid YAML; quote it (key='value')"
        ) from None
    return keys, value


def apply_override(data: dict[str, Any], keys: list[str], value: Any, *, source: str) -> None:
    """Set `data[k1][k2]... = value`, creating mappings on the way.

    Stage settings are addressed by index or by name: `stages.1.param_ratio`,
    `stages.lowrank.param_ratio` (the first lowrank stage) or `stages.1.lowrank.param_ratio`.
    """
    shown = ".".join(keys)
    if keys[0] == "stages" and len(keys) > 1:
        if len(keys) == 2:
            raise ConfigError(
                f"--set {shown}: name a setting of the stage, for example stages.{keys[1]}.epochs=2"
            )
        name, settings = _find_stage(data.get("stages", []), keys[1], shown, source)
        rest = keys[2:]
        if len(rest) > 1 and rest[0] == name:
            rest = rest[1:]
        _set_path(settings, rest, value, shown)
        return
    _set_path(data, keys, value, shown)


def _set_path(where: dict[str, Any], keys: list[str], value: Any, shown: str) -> None:
    for depth, key in enumerate(keys[:-1]):
        nxt = where.get(key)
        if nxt is None:
            nxt = where[key] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(
                f"--set {shown}: {'.'.join(keys[: depth + 1])} is a value ({short_repr(nxt)}), "
                "not a mapping"
            )
        where = nxt
    where[keys[-1]] = value


def _find_stage(
    stages: list[dict[str, Any]], key: str, shown: str, source: str
) -> tuple[str, dict[str, Any]]:
    if key.lstrip("-").isdigit():
        index = int(key)
        if not -len(stages) <= index < len(stages):
            raise ConfigError(
                f"--set {shown}: {source} has {len(stages)} stages; index {index} is out of range"
            )
        item = stages[index]
    else:
        matches = [s for s in stages if key in s]
        if not matches:
            names = [next(iter(s)) for s in stages]
            raise ConfigError(
                f"--set {shown}: no stage named {key!r} in {source} "
                f"(stages: {', '.join(names) or 'none'})"
            )
        item = matches[0]
    ((name, settings),) = item.items()
    return name, settings
