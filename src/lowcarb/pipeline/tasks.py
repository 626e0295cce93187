"""Tasks: what differs between sequence classification and causal language modelling in a run.

The runner, the ledger, the stages and the transforms are shared; a task supplies the four things
that differ (DESIGN.md seam 6), chosen once from the recipe's `task:` field:

- `load(recipe) -> (data, handle)`: the data bundle and the model that reads it;
- `fit(ctx, config) -> summary`: training with the task's loss (and its per-token figures);
- `evaluate(ctx, settings) -> metrics`: quality and serving cost, the report's columns;
- `save_extras(ctx, folder)`: files the saved model needs besides its weights (a label map).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from lowcarb.data import load_data
from lowcarb.data.lm import load_lm_data
from lowcarb.errors import ConfigError
from lowcarb.models import build_model
from lowcarb.models.causal_lm import build_causal_lm
from lowcarb.models.handle import ModelHandle
from lowcarb.train.causal_lm import fit_causal_lm
from lowcarb.train.config import TrainConfig
from lowcarb.train.evaluate import evaluate
from lowcarb.train.memory import gradient_checkpointing

if TYPE_CHECKING:
    from lowcarb.pipeline.context import RunContext
    from lowcarb.pipeline.recipe import Recipe

CLASSIFICATION = "sequence-classification"
CAUSAL_LM = "causal-lm"
TASK_NAMES = (CLASSIFICATION, CAUSAL_LM)
OnEpoch = Callable[[int, dict[str, float]], None]
EvalSplit = Literal["dev", "test"]  # the splits a model is scored on (train is what it learnt)


@dataclass(frozen=True)
class EvaluationSettings:
    """The recipe's `evaluation:` section and the evaluate stage's overrides, resolved."""

    splits: tuple[EvalSplit, ...] = ("dev", "test")
    threads: int = 1
    inferences: int = 1000
    latency_batch_sizes: tuple[int, ...] = (1, 32)
    # None: repeat until the median is steady (evaluation.latency_budget_s / latency_rel_ci).
    latency_repeats: int | None = None
    # causal-lm
    generation_batch_sizes: tuple[int, ...] = (1, 8)
    generated_tokens: int = 1000
    timing_new_tokens: int = 32
    max_new_tokens: int = 64
    generation_repeats: int = 5


class Task(Protocol):
    name: str

    def load(self, recipe: Recipe) -> tuple[Any, ModelHandle]: ...

    def fit(self, ctx: RunContext, config: TrainConfig, *, on_epoch: OnEpoch | None = None) -> dict[str, Any]: ...

    def evaluate(self, ctx: RunContext, settings: EvaluationSettings) -> dict[str, Any]: ...

    def save_extras(self, ctx: RunContext, folder: Path) -> None: ...


class SequenceClassification:
    """Labels from a fixed set: cross-entropy on the head, accuracy and macro-F1, latency per inference."""

    name = CLASSIFICATION

    def load(self, recipe: Recipe) -> tuple[Any, ModelHandle]:
        data = load_data(recipe.data)
        return data, build_model(recipe.model, data, seed=recipe.train.seed)

    def fit(self, ctx: RunContext, config: TrainConfig, *, on_epoch: OnEpoch | None = None) -> dict[str, Any]:
        train_loader = ctx.loader("train", config.batch_size, shuffle=True, seed=config.seed)
        dev_loader = ctx.loader("dev", config.batch_size)
        with gradient_checkpointing(ctx.model, config.gradient_checkpointing):
            result = ctx.fit(
                train=config, train_loader=train_loader, dev_loader=dev_loader,
                on_step=_epoch_hook(on_epoch, len(train_loader), dev_loader),
            )  # fmt: skip
        summary = result.to_dict()
        summary.pop("history", None)
        return summary

    def evaluate(self, ctx: RunContext, settings: EvaluationSettings) -> dict[str, Any]:
        from lowcarb.pipeline.evaluation import evaluate_classifier

        return evaluate_classifier(ctx, settings)

    def save_extras(self, ctx: RunContext, folder: Path) -> None:
        ctx.data.save_label_map(folder / "label_map.json")


class CausalLM:
    """Next-token prediction on responses: perplexity, exact match, time per generated token."""

    name = CAUSAL_LM

    def load(self, recipe: Recipe) -> tuple[Any, ModelHandle]:
        data = load_lm_data(recipe.data)
        return data, build_causal_lm(recipe.model, seed=recipe.train.seed)

    def fit(self, ctx: RunContext, config: TrainConfig, *, on_epoch: OnEpoch | None = None) -> dict[str, Any]:
        if on_epoch is not None:
            raise ConfigError("per-epoch trial pruning (lowcarb search) does not support task: causal-lm yet")
        if config.early_stopping_patience is not None:
            raise ConfigError(
                "train.early_stopping_patience is not supported for task: causal-lm (there is no "
                "dev accuracy to watch during training); bound training with train.max_steps"
            )
        loader = ctx.loader("train", config.batch_size, shuffle=True, seed=config.seed)
        label = ctx.current.label if ctx.current is not None else "train"
        result = fit_causal_lm(ctx.model, loader, config, carbon_config=ctx.carbon, name=f"{label}:tokens")
        return result.to_dict()

    def evaluate(self, ctx: RunContext, settings: EvaluationSettings) -> dict[str, Any]:
        from lowcarb.pipeline.lm_evaluation import evaluate_causal_lm

        return evaluate_causal_lm(ctx, settings)

    def save_extras(self, ctx: RunContext, folder: Path) -> None:
        return None


_TASKS: dict[str, Task] = {CLASSIFICATION: SequenceClassification(), CAUSAL_LM: CausalLM()}


def task_for(name: str) -> Task:
    """The task object for a recipe's `task:` value (validated by the recipe schema)."""
    try:
        return _TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; use one of {list(TASK_NAMES)}") from None


def _epoch_hook(on_epoch: OnEpoch | None, steps_per_epoch: int, dev_loader: Any) -> Any:
    """`on_epoch(epoch, dev_metrics)` after every epoch (set by `lowcarb search`, which stops a
    poor trial by raising from it). Evaluates dev once more per epoch: fit's own evaluation has
    no callback."""
    if on_epoch is None:
        return None

    def on_step(step: int, model: Any) -> bool:
        if step % steps_per_epoch == 0:
            metrics = evaluate(model, dev_loader, quiet=True)
            model.train()
            on_epoch(step // steps_per_epoch - 1, metrics)
        return False

    return on_step
