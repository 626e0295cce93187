"""The `lowrank` stage: factorize Linear/Conv2d layers (spectral init), then a short recovery
fine-tune with Frobenius decay on the factors (Khodak et al., ICLR 2021)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lowcarb.compress import lowrank
from lowcarb.compress.lowrank import LowRankConfig
from lowcarb.pipeline.context import RunContext, fit_notes
from lowcarb.pipeline.registry import (
    TrainOverrides,
    register_stage,
    technique_fields,
    technique_values,
)
from lowcarb.train.loop import default_param_groups

# How to choose ranks: one of param_ratio, energy, rank (param_ratio 0.5 when none is set).
_LowRankFields = technique_fields(LowRankConfig, defaults={"param_ratio": None})


class LowRankStageConfig(_LowRankFields, TrainOverrides):  # type: ignore[misc, valid-type]
    # The recovery fine-tune after factorizing (0 epochs and no max_steps: none).
    recover: bool = True
    # "frobenius": penalise ||UV||_F^2 and exclude U, V from weight decay (the paper's choice);
    # "weight": ordinary AdamW weight decay on U and V (for comparison).
    decay: Literal["frobenius", "weight"] = "frobenius"
    frobenius_decay: float = Field(default=1e-4, ge=0)

    def technique(self) -> LowRankConfig:
        values = technique_values(self, LowRankConfig)
        if all(values[k] is None for k in ("param_ratio", "energy", "rank")):
            values["param_ratio"] = 0.5
        return LowRankConfig(**values)

    @model_validator(mode="after")
    def _valid(self) -> LowRankStageConfig:
        self.technique()
        return self


@register_stage("lowrank", LowRankStageConfig)
def lowrank_stage(ctx: RunContext, cfg: LowRankStageConfig) -> RunContext:
    """Factorize dense layers into spectral-initialised U V, then recover with Frobenius decay."""
    summary = lowrank.apply(ctx.model, cfg.technique())
    notes = summary.to_dict()
    notes.pop("energy_kept")  # per-layer detail: the ranks say enough in the report
    if cfg.recover:
        train = ctx.train_config(cfg)
        if cfg.decay == "frobenius":
            groups = lowrank.param_groups(ctx.model, train.weight_decay)
            extra = lowrank.frobenius_decay_loss(cfg.frobenius_decay)
        else:
            groups, extra = default_param_groups(ctx.model, train.weight_decay), None
        result = ctx.fit(train=train, extra_loss=extra, param_groups=groups)
        notes.update(fit_notes(result, prefix="recover_"))
    notes["decay"] = cfg.decay if cfg.recover else None
    ctx.note(**notes)
    return ctx
