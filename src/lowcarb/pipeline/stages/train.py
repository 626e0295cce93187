"""The `train` stage: fine-tune or train the current model with the recipe's training settings."""

from __future__ import annotations

from pydantic import Field

from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.registry import TrainOverrides, register_stage
from lowcarb.pipeline.tasks import TASK_NAMES


class TrainStageConfig(TrainOverrides):
    early_stopping_patience: int | None = Field(default=None, gt=0)


@register_stage("train", TrainStageConfig, tasks=TASK_NAMES)
def train_stage(ctx: RunContext, cfg: TrainStageConfig) -> RunContext:
    """Train the model on the train split, with early stopping on dev when patience is set."""
    config = ctx.train_config(cfg, early_stopping_patience=cfg.early_stopping_patience)
    summary = ctx.train_task(config, on_epoch=ctx.shared.get("on_epoch"))
    ctx.note(**summary, train_examples=len(ctx.data.train))
    return ctx
