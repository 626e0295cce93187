"""`distill(student, teacher, train_loader, dev_loader, method, train)`: one call per method.

The method is a typed config, dispatched by type:
- `HardLabels()`: the student on labels alone (the baseline every method is compared with);
- `LogitKD(temperature, alpha)`: Hinton KD, teacher logits computed once per example (a causal
  LM: per next-token position of the responses, lowcarb.compress.distill.causal_lm);
- `MiniLM(version=2, relation_heads, teacher_layer)`: self-attention relation transfer (+ KD);
- `Intermediate(layer_map)`: TinyBERT-style hidden-state and attention matching (+ KD);
- `XtremeDistil(...)` (in `xtremedistil.py`): the three-stage schedule with gradual unfreezing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from lowcarb.compress.distill.capture import encoder_layers, hidden_width, num_heads_of
from lowcarb.compress.distill.causal_lm import KD_TOKENS, distill_causal_lm, is_causal_lm
from lowcarb.compress.distill.losses import IntermediateMatcher, uniform_layer_map
from lowcarb.compress.distill.objectives import (
    hard_label_objective,
    intermediate_relation,
    kd_objective,
    minilm_relation_for,
    traced_objective,
)
from lowcarb.compress.distill.result import DistillSummary
from lowcarb.compress.distill.teacher import TeacherLogits
from lowcarb.compress.distill.xtremedistil import XtremeDistil, xtremedistil
from lowcarb.models.surgery import count_parameters
from lowcarb.train import TrainConfig, default_param_groups, fit
from lowcarb.train.batches import Batch


@dataclass(frozen=True)
class HardLabels:
    """No teacher: cross-entropy on the labels."""


@dataclass(frozen=True)
class LogitKD:
    """alpha weighs the soft (teacher) term, 1 - alpha the hard-label term. `tokens` (causal
    LMs only): the positions the soft term covers, "response" (the labelled tokens, as the
    hard term) or "all" (every token of prompt and response); a classifier has one position
    per example and takes the default."""

    temperature: float = 2.0
    alpha: float = 0.5
    tokens: str = "response"

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"KD temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"KD alpha must be in [0, 1], got {self.alpha}")
        if self.tokens not in KD_TOKENS:
            raise ValueError(f"KD tokens must be one of {list(KD_TOKENS)}, got {self.tokens!r}")


@dataclass(frozen=True)
class MiniLM:
    """MiniLM relation transfer. version=1: last-layer attention distributions + value relation
    (student and teacher need equal head counts). version=2: Q-Q, K-K, V-V relations with
    `relation_heads` (None: the teacher's head count) from `teacher_layer`.
    `kd` adds logit KD (None: relations only, as in task-agnostic distillation)."""

    version: int = 2
    relation_heads: int | None = None
    teacher_layer: int = -1
    student_layer: int = -1
    weight: float = 1.0
    kd: LogitKD | None = field(default_factory=LogitKD)

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"MiniLM version must be 1 or 2, got {self.version}")
        if self.relation_heads is not None and self.relation_heads < 1:
            raise ValueError(f"relation_heads must be >= 1, got {self.relation_heads}")


@dataclass(frozen=True)
class Intermediate:
    """TinyBERT-style matching; `layer_map[i]` is the teacher block for student block i
    (None: evenly spaced ending at the top block)."""

    layer_map: tuple[int, ...] | None = None
    hidden_weight: float = 1.0
    attention_weight: float = 1.0
    kd: LogitKD | None = field(default_factory=LogitKD)

    def __post_init__(self) -> None:
        if self.hidden_weight < 0 or self.attention_weight < 0:
            raise ValueError(
                f"Intermediate weights must be >= 0 (0 turns a term off), got hidden_weight="
                f"{self.hidden_weight}, attention_weight={self.attention_weight}"
            )


Method = HardLabels | LogitKD | MiniLM | Intermediate | XtremeDistil


def check_classifier_kd(student: nn.Module, method: Method) -> None:
    """A classifier's KD has one position per example: `LogitKD(tokens=...)` is for causal LMs."""
    kd = method if isinstance(method, LogitKD) else getattr(method, "kd", None)
    if kd is not None and kd.tokens != "response":
        raise ValueError(
            f"LogitKD(tokens={kd.tokens!r}) is for causal LMs (KD over prompt tokens too); a "
            f"{type(student).__name__} has one prediction per example: leave tokens at its default"
        )


def distill(
    student: nn.Module,
    teacher: nn.Module,
    train_loader: Iterable[Batch],
    dev_loader: Iterable[Batch] | None,
    method: Method,
    train: TrainConfig | None = None,
    *,
    unlabelled_loader: Iterable[Batch] | None = None,
    teacher_logits: TeacherLogits | None = None,
    extra_loss: Callable[[nn.Module], Tensor] | None = None,
    param_groups: list[dict[str, Any]] | None = None,
) -> DistillSummary:
    """Train `student` (in place) to imitate `teacher` with `method`; the teacher is not changed.

    `teacher_logits` lets several students share one cache of teacher outputs.
    `unlabelled_loader` is used by XtremeDistil's teacher-only stages.
    `extra_loss` and `param_groups` go to `train.fit` (for example Frobenius decay and its
    parameter groups when a factorized student recovers under KD); XtremeDistil builds its own.
    """
    train = train or TrainConfig()
    if teacher_logits is not None and teacher_logits.teacher is not teacher:
        raise ValueError("teacher_logits caches another model's outputs: build it from this teacher")
    cache = teacher_logits if teacher_logits is not None else TeacherLogits(teacher)
    before = cache.forward_examples
    if isinstance(method, XtremeDistil):
        if extra_loss is not None or param_groups is not None:
            raise ValueError("XtremeDistil manages its own parameter groups; drop extra_loss/param_groups")
        return xtremedistil(
            student, teacher, train_loader, dev_loader, method, train,
            unlabelled_loader=unlabelled_loader, teacher_logits=cache,
        )
    if unlabelled_loader is not None:
        raise ValueError(
            f"{type(method).__name__} trains on one loader; unlabelled text is used by "
            "XtremeDistil (or distil_task_agnostic)"
        )
    fit_kwargs: dict[str, Any] = {"extra_loss": extra_loss, "param_groups": param_groups}
    if is_causal_lm(student):  # per-token KD on the responses, teacher run per batch
        return distill_causal_lm(student, teacher, train_loader, method, train, **fit_kwargs)
    check_classifier_kd(student, method)
    if isinstance(method, HardLabels):
        result = fit(
            student, train_loader, dev_loader, train, loss_fn=hard_label_objective(), **fit_kwargs
        )
    elif isinstance(method, LogitKD):
        objective = kd_objective(cache, temperature=method.temperature, alpha=method.alpha)
        result = fit(student, train_loader, dev_loader, train, loss_fn=objective, **fit_kwargs)
    elif isinstance(method, (MiniLM, Intermediate)):
        relation, weight, kd, qkv, extra_params = _matching(method, student, teacher)
        if extra_params:
            groups = list(param_groups or default_param_groups(student, train.weight_decay))
            groups.append({"params": extra_params, "weight_decay": 0.0})
            fit_kwargs["param_groups"] = groups
        with traced_objective(
            student, teacher, relation,
            weight=weight,
            kd_temperature=kd.temperature if kd else None,
            kd_alpha=kd.alpha if kd else 1.0,
            qkv=qkv,
            counter=cache,
        ) as objective:
            result = fit(student, train_loader, dev_loader, train, loss_fn=objective, **fit_kwargs)
    else:
        raise ValueError(
            f"unknown distillation method {method!r}: use HardLabels, LogitKD, MiniLM, "
            "Intermediate or XtremeDistil"
        )
    return DistillSummary(
        method=type(method).__name__,
        params_before=count_parameters(teacher),
        params_after=count_parameters(student),
        steps=result.steps,
        teacher_forward_examples=cache.forward_examples - before,
        dev=result.best_dev,
        stages=({"name": type(method).__name__, **result.to_dict()},),
    )


def _matching(
    method: MiniLM | Intermediate, student: nn.Module, teacher: nn.Module
) -> tuple[Callable[[object, object, Tensor | None], Tensor], float, LogitKD | None, bool, list[nn.Parameter]]:
    """(relation loss, its weight, the KD term, whether to trace q/k/v, extra trained parameters)
    of a relation-matching method."""
    if isinstance(method, MiniLM):
        return minilm_relation_for(method, student, teacher), method.weight, method.kd, True, []
    student_layers, teacher_layers = len(encoder_layers(student)), len(encoder_layers(teacher))
    layer_map = method.layer_map or uniform_layer_map(student_layers, teacher_layers)
    if len(layer_map) != student_layers:
        raise ValueError(
            f"layer_map {layer_map} has {len(layer_map)} entries but the student has "
            f"{student_layers} layers"
        )
    matcher = IntermediateMatcher(
        layer_map,
        student_width=hidden_width(student),
        teacher_width=hidden_width(teacher),
        heads=num_heads_of(teacher) if method.attention_weight else None,
        hidden_weight=method.hidden_weight,
        attention_weight=method.attention_weight,
    )
    # Queries/keys/values are traced only when a loss reads them: hidden-state matching alone
    # also works for models whose attention has no separate q/k/v Linears (factorized ones).
    qkv = method.attention_weight > 0
    return intermediate_relation(matcher), 1.0, method.kd, qkv, list(matcher.parameters())
