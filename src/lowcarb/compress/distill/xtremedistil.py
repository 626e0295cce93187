"""XtremeDistil (Mukherjee & Awadallah, 2020): distil in stages, each with gradual unfreezing.

  stage 1 `Representation`: the student's last hidden states, through a learned projection, match
          the teacher's hidden states (MSE) - on unlabelled (or labelled) text;
  stage 2 `Logits`: the student matches the teacher's logits (KD, soft targets only) - on
          unlabelled (or labelled) text;
  stage 3 `Labels`: cross-entropy on the labelled data.
Every stage starts with only the top group trainable (head + top block) and unfreezes one more
group downwards every `unfreeze_every` steps (see `unfreezing.py`).

The stages share one step budget: `train.max_steps`, or `train.epochs` passes over the labelled
loader; each stage takes its `fraction` of it, so XtremeDistil costs the same number of student
updates as a one-stage method with the same TrainConfig.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from lowcarb.compress.distill.capture import hidden_width
from lowcarb.compress.distill.objectives import (
    hard_label_objective,
    kd_objective,
    representation_relation,
    traced_objective,
)
from lowcarb.compress.distill.result import DistillSummary
from lowcarb.compress.distill.teacher import TeacherLogits
from lowcarb.compress.distill.unfreezing import GradualUnfreezing, Unfreezer, unfreezing_groups
from lowcarb.models.surgery import count_parameters
from lowcarb.train import TrainConfig, fit
from lowcarb.train.batches import Batch


@dataclass(frozen=True)
class Representation:
    """Stage 1: hidden-state transfer through a projection, from the teacher's `teacher_layer`."""

    fraction: float = 0.3
    teacher_layer: int = -1
    unfreeze_every: int | None = None  # None: every group unfrozen by the middle of the stage


@dataclass(frozen=True)
class Logits:
    """Stage 2: KD on the teacher's logits at `temperature` (soft targets only)."""

    fraction: float = 0.4
    temperature: float = 1.0
    unfreeze_every: int | None = None


@dataclass(frozen=True)
class Labels:
    """Stage 3: cross-entropy on the labelled data."""

    fraction: float = 0.3
    unfreeze_every: int | None = None


Stage = Representation | Logits | Labels


@dataclass(frozen=True)
class XtremeDistil:
    stages: tuple[Stage, ...] = (Representation(), Logits(), Labels())

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("XtremeDistil needs at least one stage (Representation, Logits, Labels)")
        for stage in self.stages:
            if not isinstance(stage, (Representation, Logits, Labels)):
                raise ValueError(f"unknown XtremeDistil stage {stage!r}: use Representation, Logits or Labels")
            if not stage.fraction > 0:
                raise ValueError(f"stage {type(stage).__name__}: fraction must be > 0, got {stage.fraction}")
            if stage.unfreeze_every is not None and stage.unfreeze_every < 0:
                raise ValueError(f"stage {type(stage).__name__}: unfreeze_every must be >= 0")


def _all_param_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    # Frozen parameters are included on purpose: they start training when unfrozen mid-stage
    # (AdamW skips a parameter while its grad is None).
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [
        g
        for g in (
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        )
        if g["params"]
    ]


def _budget(train: TrainConfig, loader: Iterable[Batch]) -> int:
    try:
        per_epoch = len(loader)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ValueError("XtremeDistil needs a sized labelled loader (a DataLoader or a list)") from exc
    total = train.epochs * per_epoch
    return min(total, train.max_steps) if train.max_steps is not None else total


def _stage_bounds(config: XtremeDistil, budget: int) -> list[int]:
    """Step counts at the stages' ends, by cumulative rounding: they add up to the budget exactly."""
    total_fraction = sum(stage.fraction for stage in config.stages)
    cumulative, bounds = 0.0, [0]
    for stage in config.stages:
        cumulative += stage.fraction
        bounds.append(round(budget * cumulative / total_fraction))
    return bounds


def _fit_stage(
    stage: Any,
    student: nn.Module,
    teacher: nn.Module,
    loaders: tuple[Iterable[Batch], Iterable[Batch] | None],
    stage_train: TrainConfig,
    cache: TeacherLogits,
    trainable: list[nn.Parameter],
    unfreezer: Unfreezer,
) -> Any:
    """One stage's training: representation matching (through a projection when the widths
    differ), teacher logits, or labels."""
    loader, dev_loader = loaders
    if isinstance(stage, Representation):
        s_width, t_width = hidden_width(student), hidden_width(teacher)
        projection: nn.Module = nn.Identity() if s_width == t_width else nn.Linear(s_width, t_width)
        extra = list(projection.parameters())
        with traced_objective(
            student, teacher,
            representation_relation(projection, teacher_layer=stage.teacher_layer),
            weight=1.0, kd_temperature=None, qkv=False, counter=cache,
        ) as objective:
            return fit(
                student, loader, None, stage_train, loss_fn=objective,
                param_groups=_all_param_groups(trainable + extra, stage_train.weight_decay),
                on_step=unfreezer.on_step,
            )  # fmt: skip
    objective = (
        kd_objective(cache, temperature=stage.temperature, alpha=1.0)
        if isinstance(stage, Logits)
        else hard_label_objective()
    )
    return fit(
        student, loader, dev_loader, stage_train, loss_fn=objective,
        param_groups=_all_param_groups(trainable, stage_train.weight_decay),
        on_step=unfreezer.on_step,
    )  # fmt: skip


def xtremedistil(
    student: nn.Module,
    teacher: nn.Module,
    train_loader: Iterable[Batch],
    dev_loader: Iterable[Batch] | None,
    config: XtremeDistil,
    train: TrainConfig,
    *,
    unlabelled_loader: Iterable[Batch] | None = None,
    teacher_logits: TeacherLogits | None = None,
) -> DistillSummary:
    """Run the stages in order on `student` (in place); returns one record per stage."""
    cache = teacher_logits if teacher_logits is not None else TeacherLogits(teacher)
    before = cache.forward_examples
    budget = _budget(train, train_loader)
    transfer_loader = unlabelled_loader if unlabelled_loader is not None else train_loader
    trainable = [p for p in student.parameters() if p.requires_grad]
    records: list[dict[str, Any]] = []
    steps, last_dev = 0, None
    bounds = _stage_bounds(config, budget)
    for index, stage in enumerate(config.stages):
        loader = train_loader if isinstance(stage, Labels) else transfer_loader
        stage_steps = max(1, bounds[index + 1] - bounds[index])
        per_epoch = len(loader)  # type: ignore[arg-type]
        stage_train = dataclasses.replace(
            train,
            max_steps=stage_steps,
            epochs=max(1, math.ceil(stage_steps / max(1, per_epoch))),
            seed=train.seed + index,
            early_stopping_patience=None,
        )
        every = stage.unfreeze_every
        if every is None:
            every = max(1, stage_steps // (2 * len(unfreezing_groups(student))))
        unfreezer = Unfreezer(student, GradualUnfreezing(every))
        try:
            result = _fit_stage(
                stage, student, teacher, (loader, dev_loader), stage_train, cache,
                trainable, unfreezer,
            )  # fmt: skip
        finally:
            unfreezer.release()
        steps += result.steps
        if result.best_dev is not None:
            last_dev = result.best_dev
        records.append(
            {
                "name": type(stage).__name__,
                "unfreeze_every": every,
                "groups": len(unfreezer.groups),
                **result.to_dict(),
            }
        )
    return DistillSummary(
        method="XtremeDistil",
        params_before=count_parameters(teacher),
        params_after=count_parameters(student),
        steps=steps,
        teacher_forward_examples=cache.forward_examples - before,
        dev=last_dev,
        stages=tuple(records),
    )
