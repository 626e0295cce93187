"""Knowledge distillation: a small student learns to behave like a large teacher.

    student, _ = select_layers(teacher, num_layers=3)              # MiniLM L6 -> L3
    summary = distill(student, teacher, train_loader, dev_loader, LogitKD(temperature=2.0))
    summary = distill(student, teacher, train_loader, dev_loader, MiniLM(relation_heads=12))
    summary = distill(student, teacher, train_loader, dev_loader, XtremeDistil(),
                      unlabelled_loader=unlabelled)
    distil_task_agnostic(student, teacher, unlabelled_loader, TrainConfig(...))  # then fine-tune

    vocab.apply(student, vocab.keep_for_texts(train_texts, tokenizer, bits=8))  # table cut

Losses (`losses.py`) work on `Trace`s recorded by forward hooks (`capture.trace`).
"""

from lowcarb.compress.distill import vocab
from lowcarb.compress.distill.capture import Trace, attention_probs, encoder_layers, trace
from lowcarb.compress.distill.losses import (
    IntermediateMatcher,
    attention_kl,
    kd_loss,
    minilm_loss,
    minilmv2_loss,
    uniform_layer_map,
    value_relation_kl,
)
from lowcarb.compress.distill.methods import (
    HardLabels,
    Intermediate,
    LogitKD,
    Method,
    MiniLM,
    distill,
)
from lowcarb.compress.distill.result import DistillSummary
from lowcarb.compress.distill.students import (
    StudentConfig,
    StudentSummary,
    build_student,
    select_layers,
    spread_layers,
)
from lowcarb.compress.distill.task_agnostic import distil_task_agnostic
from lowcarb.compress.distill.teacher import TeacherLogits
from lowcarb.compress.distill.unfreezing import GradualUnfreezing, Unfreezer, unfreezing_groups
from lowcarb.compress.distill.xtremedistil import Labels, Logits, Representation, XtremeDistil

__all__ = [
    "DistillSummary",
    "GradualUnfreezing",
    "HardLabels",
    "Intermediate",
    "IntermediateMatcher",
    "Labels",
    "LogitKD",
    "Logits",
    "Method",
    "MiniLM",
    "Representation",
    "StudentConfig",
    "StudentSummary",
    "TeacherLogits",
    "Trace",
    "Unfreezer",
    "XtremeDistil",
    "attention_kl",
    "attention_probs",
    "build_student",
    "distil_task_agnostic",
    "distill",
    "encoder_layers",
    "kd_loss",
    "minilm_loss",
    "minilmv2_loss",
    "select_layers",
    "spread_layers",
    "trace",
    "uniform_layer_map",
    "unfreezing_groups",
    "value_relation_kl",
    "vocab",
]
