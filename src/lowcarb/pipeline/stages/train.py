"""The `train` stage: fine-tune or train the current model with the recipe's training settings."""

from __future__ import annotations

from pydantic import Field

from lowcarb.pipeline.context import RunContext, fit_notes
from lowcarb.pipeline.registry import TrainOverrides, register_stage
from lowcarb.train.evaluate import evaluate


class TrainStageConfig(TrainOverrides):
    early_stopping_patience: int | None = Field(default=None, gt=0)


@register_stage("train", TrainStageConfig)
def train_stage(ctx: RunContext, cfg: TrainStageConfig) -> RunContext:
    """Train the model on the train split, with early stopping on dev when patience is set."""
    config = ctx.train_config(cfg, early_stopping_patience=cfg.early_stopping_patience)
    train_loader = ctx.loader("train", config.batch_size, shuffle=True, seed=config.seed)
    dev_loader = ctx.loader("dev", config.batch_size)
    result = ctx.fit(
        train=config, train_loader=train_loader, dev_loader=dev_loader,
        on_step=_epoch_hook(ctx.shared.get("on_epoch"), len(train_loader), dev_loader),
    )  # fmt: skip
    ctx.note(**fit_notes(result), train_examples=len(ctx.data.train))
    return ctx


def _epoch_hook(on_epoch, steps_per_epoch: int, dev_loader):  # -> on_step | None
    """`on_epoch(epoch, dev_metrics)` after every epoch (set by `lowcarb search`, which stops a
    poor trial by raising from it). Evaluates dev once more per epoch: fit's own evaluation has
    no callback."""
    if on_epoch is None:
        return None

    def on_step(step: int, model) -> bool:
        if step % steps_per_epoch == 0:
            metrics = evaluate(model, dev_loader, quiet=True)
            model.train()
            on_epoch(step // steps_per_epoch - 1, metrics)
        return False

    return on_step
