"""RunContext: what a stage receives and returns (the model, the data, the run so far)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from lowcarb.data import DataBundle
from lowcarb.measure.config import CarbonConfig
from lowcarb.measure.footprint import Footprint
from lowcarb.models import ModelHandle, load_model, save_model
from lowcarb.models.transforms import has_transforms
from lowcarb.pipeline.recipe import Recipe
from lowcarb.pipeline.registry import TrainOverrides
from lowcarb.pipeline.tasks import OnEpoch, Task, task_for
from lowcarb.train.config import TrainConfig
from lowcarb.train.device import Placement, cpu_placement
from lowcarb.train.loop import FitResult, fit


@dataclass
class StageRecord:
    """One ledger window of a run: a stage, or the evaluation the runner adds after a stage.

    `model_version` is the version of the model after the window (0: as loaded; every
    model-changing stage adds one). `metrics` is set when the window evaluated that version.
    """

    label: str
    name: str
    settings: dict[str, Any]
    changes_model: bool
    model_version: int
    auto: bool = False  # added by the runner (the evaluation after a model-changing stage)
    status: str = "running"  # running, completed, failed, interrupted
    # The live Footprint while the stage runs (kept if it fails), its dict once it has ended.
    footprint: dict[str, Any] | Footprint | None = None
    metrics: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunContext:
    """The state a run threads through its stages.

    A stage reads `ctx.model` / `ctx.handle`, `ctx.data`, `ctx.train_config()`; it may replace the
    model (`ctx.model = new_module`, or `ctx.handle = new_handle` when the tokenizer changes too),
    record what it did with `ctx.note(params_before=..., params_after=...)`, and returns `ctx`.
    """

    recipe: Recipe
    data: DataBundle  # an LMBundle for task: causal-lm (same loader() signature)
    handle: ModelHandle
    carbon: CarbonConfig
    artifacts_dir: Path
    run_id: str | None = None
    quiet: bool = False
    records: list[StageRecord] = field(default_factory=list)
    model_version: int = 0
    # Free-form values stages hand to later stages (for example a teacher's logits).
    shared: dict[str, Any] = field(default_factory=dict)
    # The record of the stage now running (set by the runner).
    current: StageRecord | None = None
    # Where the run computes and in which precision (resolved once by the runner, which placed
    # the model there). A stage that builds a model moves it to `ctx.device`.
    placement: Placement = field(default_factory=cpu_placement)

    @property
    def device(self) -> Any:
        return self.placement.device

    @property
    def model(self) -> nn.Module:
        return self.handle.model

    @model.setter
    def model(self, module: nn.Module) -> None:
        self.handle = dataclasses.replace(self.handle, model=module)

    @property
    def tokenizer(self) -> Any | None:
        return self.handle.tokenizer

    @property
    def task(self) -> Task:
        """What the recipe's `task:` makes different: loss, metrics, loading (pipeline.tasks)."""
        return task_for(self.recipe.task)

    def train_task(self, config: TrainConfig, *, on_epoch: OnEpoch | None = None) -> dict[str, Any]:
        """Train the current model on the train split with the task's loss (what the train and
        lora stages call); returns a JSON-able summary for `ctx.note`: steps, stop reason, ...,
        and for causal LMs also tokens, tokens/s, joules per 1,000 training tokens, peak memory."""
        return self.task.fit(self, config, on_epoch=on_epoch)

    def train_config(self, overrides: TrainOverrides | None = None, **changes: Any) -> TrainConfig:
        """The recipe's training settings (in the run's precision), with a stage's overrides
        block and `changes` applied (None values leave the recipe's setting)."""
        base = dataclasses.replace(
            self.recipe.train,
            quiet=self.quiet or self.recipe.train.quiet,
            precision=self.placement.precision,
        )
        given = {**(overrides.train_overrides() if overrides is not None else {}), **changes}
        given = {k: v for k, v in given.items() if v is not None}
        return dataclasses.replace(base, **given) if given else base

    def fit(
        self,
        overrides: TrainOverrides | None = None,
        *,
        train: TrainConfig | None = None,
        model: nn.Module | None = None,
        train_loader: Any = None,
        dev_loader: Any = None,
        **fit_kwargs: Any,
    ) -> FitResult:
        """The common training call of a stage: `model` (default: the current one) trained on the
        train split and checked on dev, with the recipe's settings plus the stage's overrides (or
        `train`, a config the stage built itself); `fit_kwargs` go to lowcarb.train.fit."""
        config = train or self.train_config(overrides)
        if train_loader is None:
            train_loader = self.loader("train", config.batch_size, shuffle=True, seed=config.seed)
        if dev_loader is None:
            dev_loader = self.loader("dev", config.batch_size)
        model = model if model is not None else self.model
        return fit(model, train_loader, dev_loader, config, **fit_kwargs)

    def save_model(self, folder: Path) -> tuple[Path, Callable[[Path], ModelHandle]]:
        """Save the current model; returns the folder and the function that reloads it. A model
        that carries a transform log is saved through it (lowcarb.compress.saved replays it)."""
        if has_transforms(self.model):
            from lowcarb.compress.saved import load_compressed, save_compressed

            return save_compressed(self.handle, folder), load_compressed
        return save_model(self.handle, folder), load_model

    def loader(
        self, split: str, batch_size: int | None = None, *, shuffle: bool = False, seed: int = 0
    ) -> Any:
        """A DataLoader over `split` ("train", "dev", "test") that feeds the current model."""
        return self.data.loader(
            split,  # type: ignore[arg-type]
            batch_size or self.recipe.train.batch_size,
            shuffle=shuffle,
            tokenizer=self.handle.tokenizer,
            seed=seed,
            pin_memory=self.placement.pin_memory,
        )

    def note(self, **values: Any) -> None:
        """Record what the current stage did (shown in the report and stored with the stage).

        Values must be JSON-able (numbers, strings, lists, dicts); a transform's summary
        goes in as `ctx.note(**summary.to_dict())`.
        """
        if self.current is None:
            raise ValueError("ctx.note() is for stages; it was called outside a running stage")
        self.current.summary.update(values)

    def set_metrics(self, metrics: dict[str, Any]) -> None:
        """Attach an evaluation of the current model to the running stage (the evaluate stage)."""
        if self.current is None:
            raise ValueError("ctx.set_metrics() is for stages; it was called outside a stage")
        self.current.metrics = dict(metrics)


def fit_notes(result: FitResult, prefix: str = "") -> dict[str, Any]:
    """A fit's result for `ctx.note` (the per-step history stays out of the report)."""
    notes = result.to_dict()
    notes.pop("history", None)
    return {f"{prefix}{k}": v for k, v in notes.items()}
