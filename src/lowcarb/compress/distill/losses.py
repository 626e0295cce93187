"""Distillation losses: logit KD, TinyBERT-style intermediate matching, MiniLM and MiniLMv2 relations.

Every loss takes the student's output first and the teacher's second; teacher tensors are detached
here so callers cannot leak gradients into the teacher. Hidden states, queries, keys and values come
from `capture.trace` (a `Trace`), the attention mask is the batch's (B, T) padding mask or None.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lowcarb.compress.distill.capture import Trace, relation_logits


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 1.0,
) -> Tensor:
    """Hinton KD: alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, labels).

    The T^2 factor keeps the soft term's gradient scale independent of T (soft gradients shrink
    as 1/T^2). KL is averaged over the batch. Without labels only the soft term is returned.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (the weight of the soft KD term) must be in [0, 1], got {alpha}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ: both models must predict the same labels"
        )
    t = float(temperature)
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits.detach() / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)
    if labels is None or alpha == 1.0:
        return soft
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of (B, [H,] T) values over the valid (unpadded) positions."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    while weights.dim() < values.dim():
        weights = weights.unsqueeze(1)
    weights = weights.expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def relation_kl(student_scores: Tensor, teacher_scores: Tensor, mask: Tensor | None) -> Tensor:
    """KL(softmax(teacher) || softmax(student)) over the last axis of (B, H, T, T) scores,
    averaged over heads and valid query positions (padded keys were masked in the scores)."""
    log_s = F.log_softmax(student_scores, dim=-1)
    log_t = F.log_softmax(teacher_scores.detach(), dim=-1)
    terms = log_t.exp() * (log_t - log_s)
    if mask is not None:
        terms = terms.masked_fill(~mask.bool()[:, None, None, :], 0.0)
    return _masked_mean(terms.sum(-1), mask)


def _check_layer(trace: Trace, layer: int, who: str) -> int:
    count = len(trace.query)
    if count == 0:
        raise ValueError(f"the {who} trace holds no queries/keys/values: trace it with qkv=True")
    if not -count <= layer < count:
        raise ValueError(f"{who} layer {layer} does not exist: the {who} has {count} layers")
    return layer % count


def _self_pair(name: str, trace: Trace, layer: int) -> tuple[Tensor, Tensor]:
    """One projection (query, key or value) paired with itself: its self-relation at `layer`."""
    x = getattr(trace, name)[layer]
    return x, x


def _pair_relation_kl(
    student: Trace,
    teacher: Trace,
    mask: Tensor | None,
    heads: int,
    layers: tuple[int, int],
    pick: Callable[[Trace, int], tuple[Tensor, Tensor]],
) -> Tensor:
    """KL between the teacher's and the student's relation softmax(A B^T / sqrt(d)) at one layer
    each, (A, B) = ``pick(trace, layer)``."""
    s = _check_layer(student, layers[0], "student")
    t = _check_layer(teacher, layers[1], "teacher")
    return relation_kl(
        relation_logits(*pick(student, s), heads, mask),
        relation_logits(*pick(teacher, t), heads, mask),
        mask,
    )


def _relation_kl_of(
    pick: Callable[[Trace, int], tuple[Tensor, Tensor]], doc: str
) -> Callable[..., Tensor]:
    def loss(
        student: Trace,
        teacher: Trace,
        mask: Tensor | None,
        *,
        heads: int,
        student_layer: int = -1,
        teacher_layer: int = -1,
    ) -> Tensor:
        return _pair_relation_kl(student, teacher, mask, heads, (student_layer, teacher_layer), pick)

    loss.__doc__ = doc
    return loss


attention_kl = _relation_kl_of(
    lambda trace, i: (trace.query[i], trace.key[i]),
    """MiniLM's self-attention distribution transfer: KL between the attention maps of one layer
    each; both models must use the same number of heads (MiniLM v1's constraint).""",
)
value_relation_kl = _relation_kl_of(
    lambda trace, i: (trace.value[i], trace.value[i]),
    """MiniLM's value relation: KL between softmax(V V^T / sqrt(d)) of teacher and student.""",
)


def minilm_loss(
    student: Trace,
    teacher: Trace,
    mask: Tensor | None,
    *,
    student_heads: int,
    teacher_heads: int,
) -> Tensor:
    """MiniLM (v1): last-layer attention distributions + value relation, each a KL."""
    if student_heads != teacher_heads:
        raise ValueError(
            f"MiniLM attention transfer needs the same number of heads (student {student_heads}, "
            f"teacher {teacher_heads}); use minilmv2_loss, whose relation heads are independent"
        )
    return attention_kl(student, teacher, mask, heads=teacher_heads) + value_relation_kl(
        student, teacher, mask, heads=teacher_heads
    )


def minilmv2_loss(
    student: Trace,
    teacher: Trace,
    mask: Tensor | None,
    *,
    relation_heads: int,
    teacher_layer: int = -1,
    student_layer: int = -1,
) -> Tensor:
    """MiniLMv2 multi-head self-attention relations: the mean of the Q-Q, K-K and V-V relation KLs.

    Queries, keys and values are re-split into `relation_heads` heads regardless of either model's
    own head count, so students with any width divisible by `relation_heads` can learn from any
    teacher layer (`teacher_layer`, default the last; MiniLMv2 picks an upper-middle layer for
    large teachers).
    """
    if relation_heads < 1:
        raise ValueError(f"relation_heads must be >= 1, got {relation_heads}")
    s = _check_layer(student, student_layer, "student")
    t = _check_layer(teacher, teacher_layer, "teacher")
    for who, trace, index in (("student", student, s), ("teacher", teacher, t)):
        width = trace.query[index].shape[-1]
        if width % relation_heads:
            raise ValueError(
                f"{who} attention width {width} is not divisible by {relation_heads} relation "
                "heads: pick relation_heads dividing both widths"
            )
    total = student.query[s].new_zeros(())
    for name in ("query", "key", "value"):
        total = total + _pair_relation_kl(
            student, teacher, mask, relation_heads, (s, t),
            functools.partial(_self_pair, name),
        )  # fmt: skip
    return total / 3.0


def uniform_layer_map(student_layers: int, teacher_layers: int) -> tuple[int, ...]:
    """Teacher block (0-based) for each student block, evenly spaced and ending at the top block:
    3 of 6 -> (1, 3, 5), TinyBERT's uniform strategy g(m) = m * L_t / L_s."""
    if student_layers < 1:
        raise ValueError(f"a student needs at least one layer, got {student_layers}")
    if student_layers > teacher_layers:
        raise ValueError(
            f"cannot map {student_layers} student layers onto {teacher_layers} teacher layers: "
            "a student may not have more layers than its teacher"
        )
    return tuple((m + 1) * teacher_layers // student_layers - 1 for m in range(student_layers))


class IntermediateMatcher(nn.Module):
    """TinyBERT-style intermediate matching: MSE of hidden states (through a learned projection
    when the widths differ) and MSE of attention distributions, along a layer map.

    `layer_map[i]` is the teacher block matched by student block i; the embedding outputs are
    matched too. One projection is shared by all layers (as in TinyBERT); it is a parameter of this
    module, so train it with the student (`param_groups` or `list(student.parameters()) +
    list(matcher.parameters())`).
    """

    def __init__(
        self,
        layer_map: Sequence[int],
        *,
        student_width: int,
        teacher_width: int,
        heads: int | None = None,
        hidden_weight: float = 1.0,
        attention_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not layer_map:
            raise ValueError("layer_map is empty: give the teacher block for each student block")
        if attention_weight and heads is None:
            raise ValueError("attention matching needs `heads` (shared by student and teacher)")
        self.layer_map = tuple(int(j) for j in layer_map)
        self.heads = heads
        self.hidden_weight = hidden_weight
        self.attention_weight = attention_weight
        self.projection: nn.Module = (
            nn.Identity()
            if student_width == teacher_width
            else nn.Linear(student_width, teacher_width, bias=False)
        )

    def forward(self, student: Trace, teacher: Trace, mask: Tensor | None) -> Tensor:
        if len(student.hidden) != len(self.layer_map) + 1:
            raise ValueError(
                f"layer_map has {len(self.layer_map)} entries but the student has "
                f"{len(student.hidden) - 1} layers"
            )
        if max(self.layer_map) >= len(teacher.hidden) - 1 or min(self.layer_map) < 0:
            raise ValueError(
                f"layer_map {self.layer_map} names teacher layers outside 0..{len(teacher.hidden) - 2}"
            )
        total = student.hidden[0].new_zeros(())
        if self.hidden_weight:
            pairs = [(0, 0)] + [(i + 1, j + 1) for i, j in enumerate(self.layer_map)]
            hidden = sum(
                _masked_mean(
                    (self.projection(student.hidden[i]) - teacher.hidden[j].detach()).pow(2).mean(-1),
                    mask,
                )
                for i, j in pairs
            )
            total = total + self.hidden_weight * hidden / len(pairs)
        if self.attention_weight:
            assert self.heads is not None
            attention = sum(
                _masked_mean(
                    (
                        torch.softmax(relation_logits(student.query[i], student.key[i], self.heads, mask), -1)
                        - torch.softmax(
                            relation_logits(teacher.query[j], teacher.key[j], self.heads, mask), -1
                        ).detach()
                    )
                    .pow(2)
                    .sum(-1),
                    mask,
                )
                for i, j in enumerate(self.layer_map)
            )
            total = total + self.attention_weight * attention / len(self.layer_map)
        return total
