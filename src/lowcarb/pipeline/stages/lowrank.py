"""The `lowrank` stage: factorize Linear/Conv2d layers (spectral init), then a short recovery
fine-tune with Frobenius decay on the factors (Khodak et al., ICLR 2021)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lowcarb.compress import lowrank
from lowcarb.compress.lowrank import LowRankConfig
from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.registry import StageConfig, register_stage
from lowcarb.pipeline.stages._compressed import RANKS, remember
from lowcarb.train.loop import default_param_groups, fit


class LowRankStageConfig(StageConfig):
    # How to choose ranks: one of param_ratio, energy, rank (param_ratio 0.5 when none is set).
    param_ratio: float | None = Field(default=None, gt=0, le=1)
    energy: float | None = Field(default=None, gt=0, le=1)
    rank: int | None = Field(default=None, gt=0)
    # fnmatch patterns over module names, e.g. ["*encoder*"]; "*" is every Linear/Conv2d.
    targets: list[str] = ["*"]
    exclude: list[str] = []
    include_conv: bool = True
    # The recovery fine-tune after factorizing (0 epochs and no max_steps: none).
    recover: bool = True
    # "frobenius": penalise ||UV||_F^2 and exclude U, V from weight decay (the paper's choice);
    # "weight": ordinary AdamW weight decay on U and V (for comparison).
    decay: Literal["frobenius", "weight"] = "frobenius"
    frobenius_decay: float = Field(default=1e-4, ge=0)
    # Unset values come from the recipe's `train:` section.
    epochs: int | None = Field(default=None, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)


def to_config(cfg: LowRankStageConfig) -> LowRankConfig:
    ratio = cfg.param_ratio
    if ratio is None and cfg.energy is None and cfg.rank is None:
        ratio = 0.5
    return LowRankConfig(
        param_ratio=ratio,
        energy=cfg.energy,
        rank=cfg.rank,
        targets=tuple(cfg.targets),
        exclude=tuple(cfg.exclude),
        include_conv=cfg.include_conv,
    )


@register_stage("lowrank", LowRankStageConfig)
def lowrank_stage(ctx: RunContext, cfg: LowRankStageConfig) -> RunContext:
    """Factorize dense layers into spectral-initialised U V, then recover with Frobenius decay."""
    summary = lowrank.apply(ctx.model, to_config(cfg))
    remember(ctx, **{RANKS: summary.ranks})
    notes = summary.to_dict()
    notes.pop("energy_kept")  # per-layer detail: the ranks say enough in the report
    if cfg.recover:
        train = ctx.train_config(
            epochs=cfg.epochs, max_steps=cfg.max_steps, lr=cfg.lr, batch_size=cfg.batch_size
        )
        if cfg.decay == "frobenius":
            groups = lowrank.param_groups(ctx.model, train.weight_decay)
            extra = lowrank.frobenius_decay_loss(cfg.frobenius_decay)
        else:
            groups, extra = default_param_groups(ctx.model, train.weight_decay), None
        result = fit(
            ctx.model,
            ctx.loader("train", train.batch_size, shuffle=True, seed=train.seed),
            ctx.loader("dev", train.batch_size),
            train,
            extra_loss=extra,
            param_groups=groups,
        )
        fit_summary = result.to_dict()
        fit_summary.pop("history", None)
        notes.update({f"recover_{k}": v for k, v in fit_summary.items()})
    notes["decay"] = cfg.decay if cfg.recover else None
    ctx.note(**notes)
    return ctx
