"""Task-agnostic distillation (the MiniLM recipe): relations only, on unlabelled text.

The student learns the teacher's self-attention relations without any labels or logits; it is
then fine-tuned on the task (`train.fit`, or `distill(..., LogitKD())`). This is how a general
small student is made once and reused for many tasks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from torch import nn

from lowcarb.compress.distill.methods import MiniLM
from lowcarb.compress.distill.objectives import minilm_relation_for, traced_objective
from lowcarb.compress.distill.result import DistillSummary
from lowcarb.compress.distill.teacher import TeacherLogits
from lowcarb.models.surgery import count_parameters
from lowcarb.train import TrainConfig, fit
from lowcarb.train.batches import Batch


def distil_task_agnostic(
    student: nn.Module,
    teacher: nn.Module,
    unlabelled_loader: Iterable[Batch],
    train: TrainConfig,
    method: MiniLM | None = None,
) -> DistillSummary:
    """Train `student` (in place) on the teacher's relations over `unlabelled_loader`.

    Batches need no labels. `method.kd` must be None: there are no task logits to match yet.
    """
    method = method or MiniLM(kd=None)
    if method.kd is not None:
        raise ValueError(
            "task-agnostic distillation matches relations only: use MiniLM(kd=None), then "
            "fine-tune the student on the task (with LogitKD if you like)"
        )
    relation = minilm_relation_for(method, student, teacher)
    counter = TeacherLogits(teacher)
    train = dataclasses.replace(train, early_stopping_patience=None)
    with traced_objective(
        student, teacher, relation, weight=method.weight, kd_temperature=None, counter=counter
    ) as objective:
        result = fit(student, unlabelled_loader, None, train, loss_fn=objective)
    return DistillSummary(
        method=f"task-agnostic MiniLM v{method.version}",
        params_before=count_parameters(teacher),
        params_after=count_parameters(student),
        steps=result.steps,
        teacher_forward_examples=counter.forward_examples,
        dev=None,
        stages=({"name": "relations", **result.to_dict()},),
    )
