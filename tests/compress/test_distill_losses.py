"""Distillation losses: KD against a hand computation, relation losses zero iff student == teacher."""

import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lowcarb.compress.distill.capture import attention_probs, trace
from lowcarb.compress.distill.losses import (
    IntermediateMatcher,
    attention_kl,
    kd_loss,
    minilm_loss,
    minilmv2_loss,
    uniform_layer_map,
    value_relation_kl,
)
from lowcarb.compress.distill.students import StudentConfig, build_student


def tiny_bert(seed: int = 0, layers: int = 4, width: int = 32, heads: int = 4):
    torch.manual_seed(seed)
    # A wide init range makes attention far from uniform, so differences between models show up.
    config = BertConfig(
        vocab_size=60,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * width,
        max_position_embeddings=16,
        num_labels=3,
        initializer_range=0.3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config).eval()


def batch():
    torch.manual_seed(1)
    ids = torch.randint(1, 60, (3, 8))
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[0, 5:] = 0  # one padded row, so masking is exercised
    return ids, mask


def traces(student, teacher):
    ids, mask = batch()
    with trace(student) as ts, trace(teacher) as tt:
        student(input_ids=ids, attention_mask=mask)
        teacher(input_ids=ids, attention_mask=mask)
    return ts, tt, mask


def test_kd_loss_matches_hand_computation_with_t_squared():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([1, 2])
    temperature, alpha = 3.0, 0.7
    soft = 0.0
    for srow, trow in zip(s.tolist(), t.tolist(), strict=True):
        ps = [math.exp(v / temperature) for v in srow]
        pt = [math.exp(v / temperature) for v in trow]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        soft += sum(b * math.log(b / a) for a, b in zip(ps, pt, strict=True))
    soft = soft / 2 * temperature**2
    hard = 0.0
    for srow, y in zip(s.tolist(), labels.tolist(), strict=True):
        hard += -(srow[y] - math.log(sum(math.exp(v) for v in srow)))
    hard /= 2
    expected = alpha * soft + (1 - alpha) * hard
    got = kd_loss(s, t, labels, temperature=temperature, alpha=alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # Soft term alone (no labels) and its T^2 scaling.
    assert kd_loss(s, t, temperature=temperature).item() == pytest.approx(soft, rel=1e-5)
    assert kd_loss(t, t, temperature=temperature).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_does_not_backpropagate_into_the_teacher():
    s = torch.randn(4, 2, requires_grad=True)
    t = torch.randn(4, 2, requires_grad=True)
    kd_loss(s, t, temperature=2.0).backward()
    assert s.grad is not None and t.grad is None


@pytest.mark.parametrize(
    "kwargs, message",
    [({"temperature": 0.0}, "temperature"), ({"alpha": 1.5}, "alpha")],
)
def test_kd_loss_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kd_loss(torch.zeros(2, 2), torch.zeros(2, 2), **kwargs)


def test_kd_loss_rejects_mismatched_logits():
    with pytest.raises(ValueError, match="same labels"):
        kd_loss(torch.zeros(2, 2), torch.zeros(2, 3))


def test_captured_attention_equals_the_models_own_attention():
    model = tiny_bert()
    ids, mask = batch()
    with trace(model) as record:
        model(input_ids=ids, attention_mask=mask)
    model.config._attn_implementation = "eager"
    out = model(
        input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True
    )
    for i, attentions in enumerate(out.attentions):
        probs = attention_probs(record.query[i], record.key[i], 4, mask)
        assert torch.allclose(probs, attentions, atol=1e-6)
    for mine, theirs in zip(record.hidden, out.hidden_states, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-5)


RELATION_LOSSES = {
    "attention_kl": lambda s, t, m: attention_kl(s, t, m, heads=4),
    "value_relation_kl": lambda s, t, m: value_relation_kl(s, t, m, heads=4),
    "minilm": lambda s, t, m: minilm_loss(s, t, m, student_heads=4, teacher_heads=4),
    "minilmv2_r8": lambda s, t, m: minilmv2_loss(s, t, m, relation_heads=8),
    "minilmv2_r2_layer1": lambda s, t, m: minilmv2_loss(
        s, t, m, relation_heads=2, teacher_layer=1, student_layer=1
    ),
    "tinybert": lambda s, t, m: IntermediateMatcher(
        uniform_layer_map(len(s.query), len(t.query)), student_width=32, teacher_width=32, heads=4
    )(s, t, m),
}


@pytest.mark.parametrize("name", sorted(RELATION_LOSSES))
def test_relation_losses_are_zero_for_the_teacher_itself_and_positive_otherwise(name):
    loss = RELATION_LOSSES[name]
    teacher = tiny_bert(seed=0)
    same = traces(teacher, teacher)
    assert loss(*same).item() == pytest.approx(0.0, abs=1e-6)
    other = traces(tiny_bert(seed=5), teacher)
    assert loss(*other).item() > 1e-3


def test_minilmv2_works_across_widths_and_head_counts():
    teacher = tiny_bert(seed=0, layers=4, width=32, heads=4)
    student = tiny_bert(seed=1, layers=2, width=16, heads=2)
    ts, tt, mask = traces(student, teacher)
    value = minilmv2_loss(ts, tt, mask, relation_heads=8, teacher_layer=2)
    assert value.item() > 0 and torch.isfinite(value)
    with pytest.raises(ValueError, match="relation heads"):
        minilmv2_loss(ts, tt, mask, relation_heads=3)
    with pytest.raises(ValueError, match="same number of heads"):
        minilm_loss(ts, tt, mask, student_heads=2, teacher_heads=4)
    with pytest.raises(ValueError, match="teacher layer 9"):
        minilmv2_loss(ts, tt, mask, relation_heads=8, teacher_layer=9)


def test_intermediate_matcher_learns_a_projection_when_widths_differ():
    teacher = tiny_bert(seed=0, width=32)
    student, _ = build_student(teacher, StudentConfig(num_layers=2, hidden_size=16, num_heads=4))
    matcher = IntermediateMatcher((1, 3), student_width=16, teacher_width=32, heads=4)
    assert sum(p.numel() for p in matcher.parameters()) == 16 * 32
    ts, tt, mask = traces(student, teacher)
    loss = matcher(ts, tt, mask)
    loss.backward()
    assert matcher.projection.weight.grad is not None
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad is not None


def test_relation_losses_ignore_padded_positions():
    teacher = tiny_bert(seed=0)
    student = tiny_bert(seed=3)
    ids, mask = batch()
    with trace(student) as ts, trace(teacher) as tt:
        student(input_ids=ids, attention_mask=mask)
        teacher(input_ids=ids, attention_mask=mask)
    base = minilmv2_loss(ts, tt, mask, relation_heads=4)
    # Changing what sits in the padded positions must not change the loss.
    ids2 = ids.clone()
    ids2[0, 5:] = 7
    with trace(student) as ts2, trace(teacher) as tt2:
        student(input_ids=ids2, attention_mask=mask)
        teacher(input_ids=ids2, attention_mask=mask)
    assert minilmv2_loss(ts2, tt2, mask, relation_heads=4).item() == pytest.approx(
        base.item(), rel=1e-5
    )
