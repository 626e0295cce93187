"""The `lowrank` stage: factorize Linear/Conv2d layers (spectral init), then a short recovery
fine-tune with Frobenius decay on the factors (Khodak et al., ICLR 2021).

The recovery learns from the model as it was before factorizing (logit KD, T = 2, half the loss on
the labels: `recover_loss: kd`) or from the labels alone (`ce`).
"""

from __future__ import annotations

import copy
from typing import Literal

from pydantic import Field

from lowcarb.compress import lowrank
from lowcarb.compress.distill import LogitKD, distill
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
    # What the recovery learns from: the dense model's logits (kd) or the labels (ce).
    recover_loss: Literal["kd", "ce"] = "kd"

    def technique(self) -> LowRankConfig:
        values = technique_values(self, LowRankConfig)
        if all(values[k] is None for k in ("param_ratio", "energy", "rank")):
            values["param_ratio"] = 0.5
        return LowRankConfig(**values)


@register_stage("lowrank", LowRankStageConfig)
def lowrank_stage(ctx: RunContext, cfg: LowRankStageConfig) -> RunContext:
    """Factorize dense layers into spectral-initialised U V, then recover with Frobenius decay."""
    teacher = copy.deepcopy(ctx.model).eval() if cfg.recover and cfg.recover_loss == "kd" else None
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
        if teacher is not None:
            kd = distill(ctx.model, teacher, ctx.loader("train", train.batch_size, shuffle=True, seed=train.seed),
                         ctx.loader("dev", train.batch_size), LogitKD(temperature=2.0, alpha=0.5), train,
                         extra_loss=extra, param_groups=groups)
            fit_summary = {k: v for k, v in kd.stages[-1].items() if k != "history"}
            fit_summary["teacher_forward_examples"] = kd.teacher_forward_examples
            notes.update({f"recover_{k}": v for k, v in fit_summary.items()})
        else:
            result = ctx.fit(train=train, extra_loss=extra, param_groups=groups)
            notes.update(fit_notes(result, prefix="recover_"))
        notes["recover_loss"] = cfg.recover_loss
    notes["decay"] = cfg.decay if cfg.recover else None
    ctx.note(**notes)
    return ctx
