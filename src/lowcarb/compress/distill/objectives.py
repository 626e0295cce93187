"""Per-batch training objectives for `train.fit(loss_fn=...)`: one builder per distillation signal.

A `loss_fn(model, batch) -> (loss, logits)` is called by `fit` on training batches and, in eval
mode, on dev batches: there it returns plain cross-entropy without running the teacher, so dev
losses stay comparable between methods and evaluation costs no teacher passes.
Builders that read hidden states or Q/K/V are context managers: the forward hooks live exactly as
long as the training run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lowcarb.compress.distill.capture import num_heads_of, trace
from lowcarb.compress.distill.losses import IntermediateMatcher, kd_loss, minilm_loss, minilmv2_loss
from lowcarb.compress.distill.teacher import TeacherLogits, freeze_teacher
from lowcarb.train.batches import Batch, forward, logits_of, model_inputs

LossFn = Callable[[nn.Module, Batch], tuple[Tensor, Tensor]]


def _eval_loss(logits: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
    return F.cross_entropy(logits.float(), batch["labels"]), logits


def _labels(batch: Batch, needed: bool) -> Tensor | None:
    labels = batch.get("labels")
    if needed and labels is None:
        raise ValueError(
            "this objective mixes in the hard-label loss but the batch has no 'labels': use a "
            "labelled loader, or alpha=1.0 (soft targets only) for unlabelled text"
        )
    return labels


def hard_label_objective() -> LossFn:
    """Cross-entropy on the labels: the no-teacher baseline."""

    def loss_fn(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        logits = forward(model, batch)
        return F.cross_entropy(logits.float(), batch["labels"]), logits

    return loss_fn


def kd_objective(teacher: TeacherLogits, *, temperature: float, alpha: float) -> LossFn:
    """Hinton KD against cached teacher logits (labels mixed in with weight 1 - alpha)."""

    def loss_fn(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        logits = forward(model, batch)
        if not model.training:
            return _eval_loss(logits, batch)
        labels = _labels(batch, alpha < 1.0)
        loss = kd_loss(logits.float(), teacher(batch), labels, temperature=temperature, alpha=alpha)
        return loss, logits

    return loss_fn



@contextmanager
def traced_objective(
    student: nn.Module,
    teacher: nn.Module,
    relation: Callable[[object, object, Tensor | None], Tensor],
    *,
    weight: float,
    kd_temperature: float | None,
    kd_alpha: float = 1.0,
    hidden: bool = True,
    qkv: bool = True,
    counter: TeacherLogits | None = None,
) -> Iterator[LossFn]:
    """`weight * relation(student_trace, teacher_trace, mask)` [+ KD on the teacher's logits].

    The teacher runs on every training batch (relations cannot be cached cheaply: they are
    B x heads x T x T); its logits from that same pass feed the KD term. `counter` (a
    TeacherLogits) has its `forward_examples` advanced by these teacher passes.
    """
    freeze_teacher(teacher)
    with trace(student, hidden=hidden, qkv=qkv) as ts, trace(teacher, hidden=hidden, qkv=qkv) as tt:

        def loss_fn(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
            logits = forward(model, batch)
            if not model.training:
                return _eval_loss(logits, batch)
            with torch.no_grad():
                teacher_logits = logits_of(teacher(**model_inputs(batch)))
            if counter is not None:
                counter.forward_examples += int(logits.shape[0])
            loss = weight * relation(ts, tt, batch.get("attention_mask"))
            if kd_temperature is not None:
                labels = _labels(batch, kd_alpha < 1.0)
                loss = loss + kd_loss(
                    logits.float(),
                    teacher_logits.float(),
                    labels,
                    temperature=kd_temperature,
                    alpha=kd_alpha,
                )
            return loss, logits

        yield loss_fn


def minilm_relation(
    *, version: int, relation_heads: int, student_heads: int, teacher_heads: int,
    teacher_layer: int, student_layer: int,
) -> Callable[[object, object, Tensor | None], Tensor]:
    """MiniLM v1 (attention + value relation, equal heads) or v2 (Q-Q/K-K/V-V relations)."""
    if version == 1:
        if teacher_layer != -1 or student_layer != -1:
            raise ValueError("MiniLM v1 transfers the last layers only; use version=2 to pick layers")
        return lambda s, t, m: minilm_loss(
            s, t, m, student_heads=student_heads, teacher_heads=teacher_heads  # type: ignore[arg-type]
        )
    if version == 2:
        return lambda s, t, m: minilmv2_loss(
            s, t, m,  # type: ignore[arg-type]
            relation_heads=relation_heads,
            teacher_layer=teacher_layer,
            student_layer=student_layer,
        )
    raise ValueError(f"MiniLM version must be 1 or 2, got {version}")


def minilm_relation_for(method: Any, student: nn.Module, teacher: nn.Module) -> Callable[[object, object, Tensor | None], Tensor]:
    """The relation loss of a ``MiniLM`` method config between these two models (their head
    counts read off the models; relation heads default to the teacher's)."""
    teacher_heads = num_heads_of(teacher)
    return minilm_relation(
        version=method.version,
        relation_heads=method.relation_heads or teacher_heads,
        student_heads=num_heads_of(student),
        teacher_heads=teacher_heads,
        teacher_layer=method.teacher_layer,
        student_layer=method.student_layer,
    )


def intermediate_relation(matcher: IntermediateMatcher) -> Callable[[object, object, Tensor | None], Tensor]:
    return lambda s, t, m: matcher(s, t, m)


def representation_relation(
    projection: nn.Module, *, teacher_layer: int = -1
) -> Callable[[object, object, Tensor | None], Tensor]:
    """XtremeDistil stage 1: MSE between the student's last hidden states (projected to the
    teacher's width) and the teacher's hidden states of `teacher_layer`, over real tokens."""

    def relation(s, t, mask: Tensor | None) -> Tensor:
        count = len(t.hidden) - 1
        if not -count <= teacher_layer < count:
            raise ValueError(f"teacher layer {teacher_layer} does not exist: the teacher has {count}")
        target = t.hidden[1:][teacher_layer].detach()
        error = (projection(s.hidden[-1]) - target).pow(2).mean(-1)  # (B, T)
        if mask is None:
            return error.mean()
        weights = mask.to(error.dtype)
        return (error * weights).sum() / weights.sum().clamp_min(1.0)

    return relation
