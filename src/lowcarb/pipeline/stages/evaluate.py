"""The `evaluate` stage: quality on dev/test and serving cost (per 1,000 inferences, or per 1,000
generated tokens for causal LMs), through the run's task."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.evaluation import evaluate_model
from lowcarb.pipeline.registry import StageConfig, register_stage
from lowcarb.pipeline.tasks import TASK_NAMES


class EvaluateConfig(StageConfig):
    # None: the recipe's `evaluation:` section decides.
    splits: tuple[Literal["dev", "test"], ...] = ("dev", "test")
    threads: int | None = Field(default=None, gt=0)
    inferences: int | None = Field(default=None, gt=0)
    # None: repeat until the median is steady (the recipe's evaluation.latency_budget_s and
    # latency_rel_ci); a number times exactly that many passes.
    latency_repeats: int | None = Field(default=None, gt=0)


@register_stage("evaluate", EvaluateConfig, changes_model=False, tasks=TASK_NAMES)
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
        generation_batch_sizes=settings.generation_batch_sizes,
        generated_tokens=settings.generated_tokens,
        timing_new_tokens=settings.timing_new_tokens,
        max_new_tokens=settings.max_new_tokens,
        generation_repeats=settings.generation_repeats,
    )
    ctx.set_metrics(metrics)
    return ctx
