"""Distillation of a causal LM: logit KD on the labelled (response) tokens of each batch.

    student, _ = select_layers(teacher, num_layers=15)     # SmolLM2: 30 -> 15 decoder blocks
    distill(student, teacher, train_loader, None, LogitKD(temperature=2.0, alpha=0.5), config)

`distill` sends a causal-LM student here. The soft term is Hinton's KD per next-token position
(KL of the temperature-softened distributions, x T^2), averaged over the response tokens
(labels != -100, the same positions the fine-tuning loss reads), or with `LogitKD(tokens="all")`
over every real token, prompt included; the hard term is the ordinary next-token cross-entropy
on the responses. Unlike a classifier's, the teacher's logits are not cached: one example
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
from lowcarb.train.causal_lm import IGNORE_INDEX, next_token_logits, shifted_logits_and_targets

__all__ = ["KD_TOKENS", "causal_lm_kd_objective", "distill_causal_lm", "is_causal_lm"]

LossFn = Callable[[nn.Module, Batch], tuple[Tensor, Tensor]]
_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")
KD_TOKENS = ("response", "all")  # the positions a causal LM's soft term covers


def is_causal_lm(model: nn.Module) -> bool:
    """A Hugging Face causal LM (its class name ends in ForCausalLM or LMHeadModel)."""
    return type(model).__name__.endswith(_LM_SUFFIXES)


def causal_lm_kd_objective(teacher: nn.Module, *, temperature: float, alpha: float, tokens: str = "response",
                           counter: list[int] | None = None) -> LossFn:  # fmt: skip
    """`alpha * KD + (1 - alpha) * CE`, CE over the labelled (response) next-token positions of
    each batch, KD over those too (`tokens="response"`) or over every real position, prompt
    included (`tokens="all"`); in eval mode plain cross-entropy (no teacher pass).
    `counter[0]` counts teacher examples."""
    if tokens not in KD_TOKENS:
        raise ValueError(f"KD tokens must be one of {list(KD_TOKENS)}, got {tokens!r}")
    frozen = freeze_teacher(teacher)

    def every_token(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        # The teacher's distribution at every prompt token is far more signal per row than one or
        # two response tokens (one SmolLM2 trial: +2 points at chance level; not the default).
        logits, targets, real = next_token_logits(model, batch)
        with torch.no_grad():
            teacher_logits, _, _ = next_token_logits(frozen, batch)
        if counter is not None:
            counter[0] += int(targets.shape[0])
        soft = kd_loss(logits.float()[real], teacher_logits.float()[real], None, temperature=temperature)
        if alpha == 1.0:
            return soft, logits
        keep = targets != IGNORE_INDEX
        return alpha * soft + (1.0 - alpha) * F.cross_entropy(logits.float()[keep], targets[keep]), logits

    def loss_fn(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        if tokens == "all" and model.training and alpha > 0.0:
            return every_token(model, batch)
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
        temperature, alpha, tokens = method.temperature, method.alpha, method.tokens
    elif isinstance(method, HardLabels):
        temperature, alpha, tokens = 1.0, 0.0, "response"
    else:
        raise ValueError(
            f"{type(method).__name__} distillation is for encoders; a causal LM distils with "
            "LogitKD(temperature, alpha) (or HardLabels for the no-teacher baseline)"
        )
    counter = [0]
    objective = causal_lm_kd_objective(teacher, temperature=temperature, alpha=alpha, tokens=tokens, counter=counter)
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
