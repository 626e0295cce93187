"""The `earlybird` stage: EarlyBERT / early-bird search, physical pruning, then training."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import Field

from lowcarb.measure import track
from lowcarb.pipeline.context import RunContext, fit_notes
from lowcarb.pipeline.registry import (
    TrainOverrides,
    register_stage,
    technique_fields,
)
from lowcarb.prune import earlybird
from lowcarb.prune.earlybird import EarlyBirdConfig


class EarlyBirdStageConfig(technique_fields(EarlyBirdConfig), TrainOverrides):  # type: ignore[misc]
    # The search's learning rate (default: the training's).
    search_lr: float | None = Field(default=None, gt=0)
    # Train the pruned network afterwards.
    train: bool = True
    # Where that training starts: from the weights the stage started with (True: EarlyBERT's
    # rewind), or from the weights the search trained, for the steps of the training budget the
    # search left (False: the search's steps count against the budget, so the whole stage takes
    # no more steps than the training alone). Without rewinding the training still starts a fresh
    # optimizer and learning-rate schedule (warm-up, decay) over the steps left, and reads the
    # search's loader on, so its batches follow on from the search's. False by the issue-18 sweep
    # on 2,000 held-out SST-2 training phrases (MiniLM, seed 0, 500 steps at lr 2e-4, no early
    # stopping): 0.8785 without rewinding against 0.869 with it
    # (benchmarks/sweeps/earlybert_rewind_sst2.json).
    rewind: bool = False


def _window(fp: Any) -> dict[str, float]:
    return {"energy_j": fp.energy_j, "duration_s": fp.duration_s, "total_g": fp.total_g}


@register_stage("earlybird", EarlyBirdStageConfig)
def earlybird_stage(ctx: RunContext, cfg: EarlyBirdStageConfig) -> RunContext:
    """Draw an early-bird ticket, remove the pruned heads/neurons/channels, train what is left."""
    train = ctx.train_config(cfg)
    loader = ctx.loader("train", train.batch_size, shuffle=True, seed=train.seed)
    # Search and training are separate ledger windows inside the stage's own window.
    with track("earlybird-search", config=ctx.carbon) as search_fp:
        # The search follows the schedule of the training it starts (search_lr aside).
        search_train = dataclasses.replace(train, lr=cfg.search_lr or train.lr)
        left = 0
        if cfg.rewind:
            ticket = earlybird.search(ctx.model, loader, cfg.technique(), search_train)
        else:
            ticket, searched = earlybird.search_keeping_weights(ctx.model, loader, cfg.technique(),
                                                                search_train)
            ctx.model = searched
            # The training budget less the steps the search already trained (none may be left:
            # the search is bounded by the same budget).
            budget = train.epochs * len(loader)
            if train.max_steps is not None:
                budget = min(budget, train.max_steps)
            left = budget - ticket.stop_step
            if left >= 1:
                train = dataclasses.replace(train, max_steps=left)
    # The search trained a copy: with rewind the pruned network keeps the weights the stage
    # started with. Its layers now differ in width; the transform log records them for saving.
    summary = earlybird.apply(ctx.model, ticket)
    fit_summary: dict[str, Any] = {}
    if cfg.train and not cfg.rewind and left < 1:
        fit_summary = {"steps": 0, "stop_reason": "the search used the whole training budget"}
    elif cfg.train:
        with track("earlybird-train", config=ctx.carbon) as train_fp:
            # Without rewinding, the search's loader goes on: a new one would replay the batches
            # the searched weights have already trained on.
            fit_summary = fit_notes(ctx.fit(train=train, train_loader=None if cfg.rewind else loader))
        fit_summary["train_window"] = _window(train_fp)
    notes = summary.to_dict()
    notes["config"] = ticket.to_dict()["config"]  # the search settings, not the masks
    ctx.note(**notes, ticket=ticket.to_dict(), search_window=_window(search_fp), **fit_summary)
    return ctx
