"""The `evaluate` stage: accuracy and macro-F1 on dev/test, latency, size, FLOPs, CO2e per 1,000."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.evaluation import evaluate_model
from lowcarb.pipeline.registry import StageConfig, register_stage


class EvaluateConfig(StageConfig):
    # None: the recipe's `evaluation:` section decides.
    splits: tuple[Literal["dev", "test"], ...] = ("dev", "test")
    threads: int | None = Field(default=None, gt=0)
    inferences: int | None = Field(default=None, gt=0)
    # None: repeat until the median is steady (the recipe's evaluation.latency_budget_s and
    # latency_rel_ci); a number times exactly that many passes.
    latency_repeats: int | None = Field(default=None, gt=0)


@register_stage("evaluate", EvaluateConfig, changes_model=False)
def evaluate_stage(ctx: RunContext, cfg: EvaluateConfig) -> RunContext:
    """Evaluate the current model: quality, latency, size, FLOPs and the footprint of serving."""
    settings = ctx.recipe.evaluation
    metrics = evaluate_model(
        ctx,
        splits=cfg.splits,
        threads=cfg.threads or settings.threads,
        inferences=cfg.inferences or settings.inferences,
        latency_batch_sizes=settings.latency_batch_sizes,
        latency_repeats=cfg.latency_repeats,
    )
    ctx.set_metrics(metrics)
    return ctx
