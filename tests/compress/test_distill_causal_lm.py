"""Distilling a tiny Llama into a student with fewer decoder blocks (logit KD on response tokens)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lowcarb.compress.distill import HardLabels, LogitKD, MiniLM, distill, select_layers
from lowcarb.compress.distill.causal_lm import causal_lm_kd_objective, is_causal_lm
from lowcarb.train import TrainConfig
from lowcarb.train.causal_lm import causal_lm_loss
from lowcarb.train.generation import greedy_generate, left_pad


def _llama(layers: int = 4, seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, initializer_range=0.3,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _batches(n: int = 6, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(2, 96, (4, 12), generator=g)
        labels = ids.clone()
        labels[:, :7] = -100  # the prompt: only the last 5 tokens are the response
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def _kd(student: nn.Module, teacher: nn.Module, batches, alpha: float = 1.0) -> float:
    objective = causal_lm_kd_objective(teacher, temperature=2.0, alpha=alpha)
    student.train()
    with torch.no_grad():
        value = sum(float(objective(student, b)[0]) for b in batches) / len(batches)
    student.eval()
    return value


def test_a_student_keeps_evenly_spaced_blocks_and_still_generates_with_its_cache():
    teacher = _llama(layers=4)
    student, summary = select_layers(teacher, num_layers=2)
    assert is_causal_lm(student)
    assert summary.teacher_layers == (1, 3)
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    assert teacher.config.num_hidden_layers == 4  # the teacher is not changed
    assert torch.equal(student.model.layers[0].mlp.up_proj.weight, teacher.model.layers[1].mlp.up_proj.weight)
    prompts = left_pad([[5, 9, 33, 7], [12, 44, 3]], pad_id=0)
    cached = greedy_generate(student, prompts, 6, eos_token_id=None, pad_token_id=0)
    assert cached.shape == (2, 6)
    # the KV cache of 2 blocks gives the argmax of a cache-free forward pass
    ids = prompts["input_ids"]
    mask = prompts["attention_mask"]
    with torch.no_grad():
        for _ in range(6):
            logits = student(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    assert torch.equal(ids[:, -6:], cached)


def test_kd_objective_is_zero_against_itself_and_cross_entropy_at_alpha_zero():
    teacher = _llama()
    batches = _batches(2)
    assert _kd(copy.deepcopy(teacher), teacher, batches) == pytest.approx(0.0, abs=1e-5)
    other = _llama(seed=3)
    with torch.no_grad():
        expected = sum(float(causal_lm_loss(other, b)[0]) for b in batches) / 2
    assert _kd(other, teacher, batches, alpha=0.0) == pytest.approx(expected, rel=1e-5)
    assert _kd(other, teacher, batches) > 0.01


def test_distilling_brings_the_student_towards_the_teacher():
    teacher = _llama(layers=4)
    student, _ = select_layers(teacher, num_layers=2)
    batches = _batches(6)
    before = _kd(student, teacher, batches)
    config = TrainConfig(epochs=4, batch_size=4, lr=3e-3, warmup_ratio=0.0, weight_decay=0.0, seed=0, quiet=True)
    summary = distill(student, teacher, batches, None, LogitKD(temperature=2.0, alpha=1.0), config)
    after = _kd(student, teacher, batches)
    assert summary.method == "LogitKD" and summary.steps == 24
    assert summary.teacher_forward_examples == 24 * 4
    assert after < 0.7 * before, (before, after)
    assert summary.params_after < summary.params_before


def test_encoder_only_methods_are_refused_for_a_causal_lm():
    teacher = _llama()
    student, _ = select_layers(teacher, num_layers=2)
    with pytest.raises(ValueError, match="a causal LM distils with LogitKD"):
        distill(student, teacher, _batches(1), None, MiniLM(), TrainConfig(epochs=1, quiet=True))
    summary = distill(student, teacher, _batches(1), None, HardLabels(), TrainConfig(epochs=1, batch_size=4, quiet=True))
    assert summary.teacher_forward_examples == 0


def _manual_all_token_kd(student: nn.Module, teacher: nn.Module, batch, temperature: float) -> float:
    """KL(teacher || student) at T, x T^2, averaged over every real next-token position."""
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    real = batch["attention_mask"][:, 1:].bool()
    log_s = torch.log_softmax(s[real] / temperature, -1)
    log_t = torch.log_softmax(t[real] / temperature, -1)
    return float((log_t.exp() * (log_t - log_s)).sum(-1).mean()) * temperature**2


def test_kd_over_every_token_covers_the_prompt_and_skips_padding():
    teacher, student = _llama(), _llama(seed=3)
    batch = _batches(1)[0]
    batch["attention_mask"][0, -3:] = 0  # a padded row: its last 3 targets are padding
    batch["labels"][0, -3:] = -100
    objective = causal_lm_kd_objective(teacher, temperature=2.0, alpha=1.0, tokens="all")
    student.train()
    with torch.no_grad():
        every = float(objective(student, batch)[0])
        response_only = float(causal_lm_kd_objective(teacher, temperature=2.0, alpha=1.0)(student, batch)[0])
    student.eval()
    assert every == pytest.approx(_manual_all_token_kd(student, teacher, batch, 2.0), rel=1e-4)
    assert every != pytest.approx(response_only, rel=1e-3)
    assert _kd(copy.deepcopy(teacher), teacher, [batch]) == pytest.approx(0.0, abs=1e-5)


def test_kd_over_every_token_keeps_cross_entropy_on_the_responses():
    teacher, student = _llama(), _llama(seed=3)
    batch = _batches(1)[0]
    student.train()
    with torch.no_grad():
        half = float(causal_lm_kd_objective(teacher, temperature=2.0, alpha=0.5, tokens="all")(student, batch)[0])
        soft = float(causal_lm_kd_objective(teacher, temperature=2.0, alpha=1.0, tokens="all")(student, batch)[0])
        hard = float(causal_lm_loss(student, batch)[0])
    assert half == pytest.approx(0.5 * soft + 0.5 * hard, rel=1e-4)
    student.eval()  # eval mode: cross-entropy on the responses, no teacher pass, as for "response"
    with torch.no_grad():
        assert float(causal_lm_kd_objective(teacher, temperature=2.0, alpha=0.5, tokens="all")(student, batch)[0]) \
            == pytest.approx(hard, rel=1e-5)


def test_kd_tokens_are_checked_and_refused_for_a_classifier():
    with pytest.raises(ValueError, match="KD tokens must be one of"):
        LogitKD(tokens="prompt")
    with pytest.raises(ValueError, match="KD tokens must be one of"):
        causal_lm_kd_objective(_llama(), temperature=2.0, alpha=0.5, tokens="every")
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, num_labels=2)  # fmt: skip
    classifier = BertForSequenceClassification(config)
    batches = [{"input_ids": torch.randint(0, 50, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long),
                "labels": torch.tensor([0, 1])}]  # fmt: skip
    with pytest.raises(ValueError, match="for causal LMs"):
        distill(copy.deepcopy(classifier), classifier, batches, None, LogitKD(tokens="all"),
                TrainConfig(max_steps=1, quiet=True))  # fmt: skip
