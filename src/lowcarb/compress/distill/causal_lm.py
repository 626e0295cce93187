"""Distillation of a causal LM: logit KD on the labelled (response) tokens of each batch.

    student, _ = select_layers(teacher, num_layers=15)     # SmolLM2: 30 -> 15 decoder blocks
    distill(student, teacher, train_loader, None, LogitKD(temperature=2.0, alpha=0.5), config)

`distill` sends a causal-LM student here. The soft term is Hinton's KD per next-token position
(KL of the temperature-softened distributions, x T^2), averaged over the response tokens only
(labels != -100, the same positions the fine-tuning loss reads); the hard term is the ordinary
next-token cross-entropy. Unlike a classifier's, the teacher's logits are not cached: one example
holds (tokens x vocabulary) of them (60 x 49,152 floats, 12 MB, for SmolLM2), so the teacher runs
on every batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lowcarb.compress.distill.losses import kd_loss
from lowcarb.compress.distill.result import DistillSummary
from lowcarb.compress.distill.teacher import freeze_teacher
from lowcarb.models.surgery import count_parameters
from lowcarb.train import TrainConfig, fit
from lowcarb.train.batches import Batch
from lowcarb.train.causal_lm import IGNORE_INDEX, shifted_logits_and_targets

__all__ = ["causal_lm_kd_objective", "distill_causal_lm", "is_causal_lm"]

LossFn = Callable[[nn.Module, Batch], tuple[Tensor, Tensor]]
_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def is_causal_lm(model: nn.Module) -> bool:
    """A Hugging Face causal LM (its class name ends in ForCausalLM or LMHeadModel)."""
    return type(model).__name__.endswith(_LM_SUFFIXES)


def causal_lm_kd_objective(teacher: nn.Module, *, temperature: float, alpha: float,
                           counter: list[int] | None = None) -> LossFn:  # fmt: skip
    """`alpha * KD + (1 - alpha) * CE` over the labelled next-token positions of each batch;
    in eval mode plain cross-entropy (no teacher pass). `counter[0]` counts teacher examples."""
    frozen = freeze_teacher(teacher)

    def loss_fn(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        logits, targets = shifted_logits_and_targets(model, batch)
        keep = targets != IGNORE_INDEX
        student = logits.float()[keep]
        if not model.training or alpha == 0.0:
            return F.cross_entropy(student, targets[keep]), logits
        with torch.no_grad():
            teacher_logits, _ = shifted_logits_and_targets(frozen, batch)
        if counter is not None:
            counter[0] += int(targets.shape[0])
        labels = targets[keep] if alpha < 1.0 else None
        loss = kd_loss(student, teacher_logits.float()[keep], labels, temperature=temperature, alpha=alpha)
        return loss, logits

    return loss_fn


def distill_causal_lm(
    student: nn.Module,
    teacher: nn.Module,
    train_loader: Iterable[Batch],
    method: Any,
    train: TrainConfig,
    **fit_kwargs: Any,
) -> DistillSummary:
    """Train the causal-LM `student` in place on `teacher`'s next-token distributions (LogitKD)
    or on the responses alone (HardLabels)."""
    from lowcarb.compress.distill.methods import HardLabels, LogitKD

    if isinstance(method, LogitKD):
        temperature, alpha = method.temperature, method.alpha
    elif isinstance(method, HardLabels):
        temperature, alpha = 1.0, 0.0
    else:
        raise ValueError(
            f"{type(method).__name__} distillation is for encoders; a causal LM distils with "
            "LogitKD(temperature, alpha) (or HardLabels for the no-teacher baseline)"
        )
    counter = [0]
    objective = causal_lm_kd_objective(teacher, temperature=temperature, alpha=alpha, counter=counter)
    result = fit(student, train_loader, None, train, loss_fn=objective, **fit_kwargs)
    return DistillSummary(
        method=type(method).__name__,
        params_before=count_parameters(teacher),
        params_after=count_parameters(student),
        steps=result.steps,
        teacher_forward_examples=counter[0],
        dev=result.best_dev,
        stages=({"name": type(method).__name__, **result.to_dict()},),
    )
