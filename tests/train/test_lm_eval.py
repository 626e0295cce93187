"""Perplexity of known distributions, answer normalisation, exact match of greedy answers."""

import math

import pytest
import torch
from torch import nn

from lowcarb.train.lm_eval import (
    answers_match,
    exact_match,
    normalize_answer,
    perplexity,
    prompt_batch,
)
from tests.lm_tiny import tiny_tokenizer

IGNORE = -100


class FixedDistribution(nn.Module):
    """Predicts the same next-token distribution at every position: `probs` over the vocabulary."""

    def __init__(self, probs):
        super().__init__()
        self.register_buffer("log_probs", torch.log(torch.as_tensor(probs, dtype=torch.float32)))

    def forward(self, input_ids, attention_mask=None):
        return self.log_probs.expand(*input_ids.shape, -1).clone()


def _batch(ids, labels):
    ids = torch.tensor(ids)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor(labels)}


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    vocab = 37
    batches = [_batch([[1, 2, 3, 4]], [[IGNORE, 2, 3, 4]]), _batch([[5, 6, 7, 0]], [[IGNORE, IGNORE, 7, IGNORE]])]
    result = perplexity(FixedDistribution([1 / vocab] * vocab), batches)
    assert result["tokens"] == 4
    assert result["perplexity"] == pytest.approx(vocab, rel=1e-5)
    assert result["loss"] == pytest.approx(math.log(vocab), rel=1e-6)


def test_perplexity_weights_every_labelled_token_equally():
    # p(token 0) = 0.5, p(token 1) = 0.25, p(token 2) = 0.25. Targets 0, 0, 1, 2 (prompt ignored):
    # mean NLL = (2 ln 2 + 2 ln 4) / 4 = 1.5 ln 2, perplexity 2 ** 1.5.
    model = FixedDistribution([0.5, 0.25, 0.25])
    batches = [_batch([[2, 0, 0]], [[IGNORE, 0, 0]]), _batch([[2, 2, 1, 2]], [[IGNORE, IGNORE, 1, 2]])]
    result = perplexity(model, batches)
    assert result["tokens"] == 4
    assert result["perplexity"] == pytest.approx(2**1.5, rel=1e-6)


def test_perplexity_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no labelled tokens"):
        perplexity(FixedDistribution([0.5, 0.5]), [_batch([[1, 1]], [[IGNORE, IGNORE]])])


@pytest.mark.parametrize(
    "prediction, reference, match",
    [
        ("April 7, 2031", "April 7, 2031", True),
        ("  april 7,   2031.  ", "April 7, 2031", True),
        ('"Positive"', "positive", True),
        ("positive\nThe review praises the film.", "positive", True),  # first line counts
        ("\n\npositive", "positive", True),
        ("negative", "positive", False),
        ("positive and negative", "positive", False),
        ("line one\nline two", "line one\nline two", True),  # multi-line references compare whole
        ("line one", "line one\nline two", False),
    ],
)
def test_answers_match_after_normalisation(prediction, reference, match):
    assert answers_match(prediction, reference) is match


def test_normalize_answer():
    assert normalize_answer("\uff21pril  7") == "april 7"  # NFKC folds the full-width A
    assert normalize_answer("'7 April 2031.'") == "7 april 2031"


class Parrot(nn.Module):
    """generate() answers each prompt with the tokens stored for it, then end-of-sequence."""

    def __init__(self, answers, eos, pad):
        super().__init__()
        self.answers, self.eos, self.pad = answers, eos, pad
        self.weight = nn.Parameter(torch.zeros(1))
        self.calls = []

    def generate(self, input_ids, attention_mask, generation_config, streamer=None):
        self.calls.append(generation_config.max_new_tokens)
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            prompt = tuple(t for t, m in zip(ids, mask, strict=True) if m)
            rows.append(list(self.answers[prompt]) + [self.eos])
        width = max(map(len, rows))
        new = [r + [self.pad] * (width - len(r)) for r in rows]
        return torch.cat([input_ids, torch.tensor(new)], dim=1)


def test_exact_match_scores_greedy_answers_in_input_order():
    tok = tiny_tokenizer()
    prompts = [tok(p)["input_ids"] for p in ("the film is", "hello", "Rewrite the date")]
    said = ["positive", "world!", "7 April 2031"]
    references = ["Positive", "world", "April 7, 2031"]
    parrot = Parrot({tuple(p): tok(s, add_special_tokens=False)["input_ids"] for p, s in zip(prompts, said, strict=True)},
                    tok.eos_token_id, tok.pad_token_id)  # fmt: skip
    result = exact_match(parrot, tok, prompts, references, batch_size=2, max_new_tokens=64, keep_examples=3)
    assert result["exact_match"] == pytest.approx(2 / 3) and result["answered"] == 3
    assert [s["match"] for s in result["samples"]] == [True, True, False]
    assert [s["prediction"] for s in result["samples"]] == said
    # The answer budget is the longest reference plus a margin, never more than max_new_tokens.
    longest = max(len(tok(r, add_special_tokens=False)["input_ids"]) for r in references)
    assert parrot.calls == [longest + 8] * 2
    assert exact_match(parrot, tok, [], [])["exact_match"] is None


def test_prompt_batch_cycles_a_short_list():
    batch = prompt_batch([[4, 5], [6]], 3, pad_id=0)
    assert batch["input_ids"].tolist() == [[4, 5], [0, 6], [4, 5]]
