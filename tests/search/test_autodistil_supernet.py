"""The weight-sharing supernet: slices, equality with extracted students, FLOPs, save/reload."""

from __future__ import annotations

import pytest
import torch
from _autodistil_tiny import batches, tiny_teacher
from transformers import BertForSequenceClassification

from lowcarb.compress.distill import trace
from lowcarb.search.autodistil import (
    SlicedLinear,
    SubnetConfig,
    Supernet,
    extract,
    split_space,
    student_space,
    subnet_flops,
)
from lowcarb.train import flops_per_example
from lowcarb.train.batches import model_inputs

FULL = SubnetConfig(3, 32, 4, 64)


def _logits(model, batch):
    with torch.no_grad():
        out = model(**model_inputs(batch))
    return getattr(out, "logits", out)


def test_full_supernet_from_teacher_is_the_teacher():
    teacher = tiny_teacher()
    supernet = Supernet.from_teacher(teacher, FULL).eval()
    batch = batches(1)[0]
    torch.testing.assert_close(_logits(supernet, batch), _logits(teacher, batch), atol=1e-5, rtol=0)


def test_sliced_linear_is_a_linear_with_the_leading_slice():
    torch.manual_seed(0)
    layer = SlicedLinear(8, 6)
    layer.active_out = 4
    x = torch.randn(3, 5)
    expected = x @ layer.weight[:4, :5].T + layer.bias[:4]
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("config", [
    SubnetConfig(1, 12, 2, 10), SubnetConfig(2, 24, 4, 42), SubnetConfig(3, 20, 2, 64), FULL,
])
def test_extracted_student_equals_the_supernet_with_that_slice(config):
    torch.manual_seed(3)
    supernet = Supernet.from_teacher(tiny_teacher(), FULL)
    # Perturb the shared weights so the check does not rest on the teacher's initialisation.
    with torch.no_grad():
        for p in supernet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    supernet.eval()
    supernet.set_active(config)
    student = extract(supernet, config).eval()
    assert student.config.num_hidden_layers == config.num_layers
    assert student.config.hidden_size == config.hidden_size
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in supernet.parameters()) \
        or config == FULL
    for batch in batches(2):
        torch.testing.assert_close(_logits(student, batch), _logits(supernet, batch), atol=1e-5, rtol=0)
    # The relation losses read the same Q/K/V from both.
    batch = batches(1)[0]
    with trace(supernet, hidden=False) as a, trace(student, hidden=False) as b, torch.no_grad():
        supernet(**model_inputs(batch))
        student(**model_inputs(batch))
    assert len(a.query) == len(b.query) == config.num_layers
    torch.testing.assert_close(a.value[-1], b.value[-1], atol=1e-5, rtol=0)


def test_students_share_weights():
    supernet = Supernet.from_teacher(tiny_teacher(), FULL)
    small, large = SubnetConfig(1, 16, 4, 21), SubnetConfig(2, 32, 4, 64)
    batch = batches(1)[0]
    supernet.eval()
    supernet.set_active(large)
    before_large = _logits(supernet, batch)
    supernet.set_active(small)
    supernet.train()
    loss = supernet(**model_inputs(batch)).pow(2).sum()
    loss.backward()
    query = supernet.bert.encoder.layer[0].attention.self.query.weight
    # Only the small student's slice got gradients ...
    assert query.grad[:16, :16].abs().sum() > 0
    assert query.grad[16:].abs().sum() == 0 and query.grad[:, 16:].abs().sum() == 0
    with torch.no_grad():
        query[:16, :16] += 0.5
    supernet.eval()
    supernet.set_active(large)
    # ... and changing it changes the larger student too (it contains that slice).
    assert not torch.allclose(_logits(supernet, batch), before_large)


@pytest.mark.parametrize("config", [SubnetConfig(1, 12, 2, 10), SubnetConfig(2, 24, 4, 42), FULL])
def test_flops_from_the_configuration_match_the_counter_on_the_extracted_model(config):
    supernet = Supernet.from_teacher(tiny_teacher(), FULL)
    student = extract(supernet, config)
    # Eager attention runs as matrix multiplies the counter sees (the fused CPU SDPA kernel is
    # not in torch's FLOP registry, which would leave attention out).
    student.set_attn_implementation("eager")
    for length in (7, 16):
        batch = batches(1, length=length)[0]
        assert flops_per_example(student, batch) == subnet_flops(config, length, num_labels=2)


def test_extraction_saves_and_reloads_with_identical_outputs(tmp_path):
    from lowcarb.models import load_minilm_tokenizer, load_model

    supernet = Supernet.from_teacher(tiny_teacher(), FULL).eval()
    config = SubnetConfig(2, 20, 2, 32)
    supernet.set_active(config)
    student = extract(supernet, config).eval()
    student.save_pretrained(tmp_path / "student")
    # A folder lowcarb loads needs tokenizer files (without them every word would be [UNK]).
    load_minilm_tokenizer().save_pretrained(tmp_path / "student")
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    via_lowcarb = load_model(tmp_path / "student").model.eval()
    for batch in batches(2):
        expected = _logits(supernet, batch)
        torch.testing.assert_close(_logits(reloaded, batch), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(_logits(via_lowcarb, batch), expected, atol=1e-5, rtol=0)


def test_students_that_do_not_fit_are_refused():
    teacher = tiny_teacher()
    tiny, _, _ = split_space(student_space(teacher), 3)
    supernet = Supernet.from_teacher(teacher, tiny.largest)
    with pytest.raises(ValueError, match="does not fit in this supernet"):
        supernet.set_active(FULL)
    with pytest.raises(ValueError, match="does not fit"):
        extract(supernet, FULL)
    with pytest.raises(ValueError, match="larger than the teacher"):
        Supernet.from_teacher(teacher, SubnetConfig(4, 32, 4, 64))
