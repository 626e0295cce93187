"""The `earlybird` stage: EarlyBERT / early-bird search, physical pruning, then training."""

from __future__ import annotations

import dataclasses

from pydantic import Field

from lowcarb.measure import track
from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.registry import StageConfig, register_stage
from lowcarb.pipeline.stages._compressed import remember
from lowcarb.prune import earlybird
from lowcarb.prune.earlybird import EarlyBirdConfig
from lowcarb.train.loop import fit


class EarlyBirdStageConfig(StageConfig):
    head_prune_ratio: float = Field(default=1 / 3, ge=0, lt=1)
    ffn_prune_ratio: float = Field(default=0.4, ge=0, lt=1)
    channel_prune_ratio: float = Field(default=0.5, ge=0, lt=1)
    l1_coef: float = Field(default=1e-4, ge=0)
    mask_every_steps: int = Field(default=10, gt=0)
    distance_threshold: float = Field(default=0.1, gt=0, le=1)
    window: int = Field(default=5, ge=2)
    max_search_steps: int = Field(default=1000, gt=0)
    search_lr: float | None = Field(default=None, gt=0)
    # Train the pruned network afterwards (from the weights the stage started with).
    train: bool = True
    epochs: int | None = Field(default=None, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)


def _window(fp) -> dict:
    return {"energy_j": fp.energy_j, "duration_s": fp.duration_s, "total_g": fp.total_g}


@register_stage("earlybird", EarlyBirdStageConfig)
def earlybird_stage(ctx: RunContext, cfg: EarlyBirdStageConfig) -> RunContext:
    """Draw an early-bird ticket, remove the pruned heads/neurons/channels, train what is left."""
    config = EarlyBirdConfig(
        head_prune_ratio=cfg.head_prune_ratio,
        ffn_prune_ratio=cfg.ffn_prune_ratio,
        channel_prune_ratio=cfg.channel_prune_ratio,
        l1_coef=cfg.l1_coef,
        mask_every_steps=cfg.mask_every_steps,
        distance_threshold=cfg.distance_threshold,
        window=cfg.window,
        max_search_steps=cfg.max_search_steps,
    )
    train = ctx.train_config(epochs=cfg.epochs, max_steps=cfg.max_steps, lr=cfg.lr,
                             batch_size=cfg.batch_size)
    loader = ctx.loader("train", train.batch_size, shuffle=True, seed=train.seed)
    # Search and training are separate ledger windows inside the stage's own window.
    with track("earlybird-search", config=ctx.carbon) as search_fp:
        # The search follows the schedule of the training it starts (search_lr aside).
        search_train = dataclasses.replace(train, lr=cfg.search_lr or train.lr)
        ticket = earlybird.search(ctx.model, loader, config, search_train)
    # The search trained a copy: the pruned network keeps the weights the stage started with.
    summary = earlybird.apply(ctx.model, ticket)
    # Layers of different widths: save through compressed.json, which records the pruned widths
    # (lowcarb.compress.saved) so the final model reloads.
    remember(ctx)
    fit_summary = {}
    if cfg.train:
        with track("earlybird-train", config=ctx.carbon) as train_fp:
            result = fit(ctx.model, loader, ctx.loader("dev", train.batch_size), train)
        fit_summary = result.to_dict()
        fit_summary.pop("history", None)
        fit_summary["train_window"] = _window(train_fp)
    ctx.note(**summary.to_dict(), ticket=ticket.to_dict(), search_window=_window(search_fp),
             **fit_summary)
    return ctx
