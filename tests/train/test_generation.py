"""Greedy generation with the KV cache: deterministic, equal to a cache-free argmax loop, timed."""

import pytest
import torch
from torch import nn

from lowcarb.errors import ModelError
from lowcarb.models import ModelConfig
from lowcarb.models.causal_lm import build_causal_lm
from lowcarb.train.generation import (
    generation_footprint,
    greedy_generate,
    left_pad,
    time_generation,
)


@pytest.fixture(params=["tiny_llama_folder", "tiny_gpt2_folder"])
def lm(request):
    return build_causal_lm(ModelConfig(name=str(request.getfixturevalue(request.param))))


def _prompts(handle, texts):
    return [handle.tokenizer(t)["input_ids"] for t in texts]


def _argmax_without_cache(model, ids, steps):
    ids = torch.tensor([ids])
    out = []
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(model(input_ids=ids, use_cache=False).logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


def test_greedy_is_deterministic_and_matches_a_cache_free_loop(lm):
    prompts = _prompts(lm, ["the film is", "Rewrite the date 2031-04-07 in the format"])
    pad = lm.tokenizer.pad_token_id
    batch = left_pad(prompts, pad)
    first = greedy_generate(lm.model, batch, 6, eos_token_id=None, pad_token_id=pad)
    second = greedy_generate(lm.model, batch, 6, eos_token_id=None, pad_token_id=pad)
    assert first.shape == (2, 6) and torch.equal(first, second)
    # Left padding changes nothing: each row equals its own argmax loop, computed without the cache.
    for row, prompt in zip(first.tolist(), prompts, strict=True):
        assert row == _argmax_without_cache(lm.model, prompt, 6)


def test_generation_stops_at_end_of_sequence(tiny_llama_folder):
    model = build_causal_lm(ModelConfig(name=str(tiny_llama_folder))).model
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied to the embeddings: every logit is 0, argmax is id 0
    out = greedy_generate(model, left_pad([[3, 4], [5]], 1), 5, eos_token_id=0, pad_token_id=1)
    assert out.tolist() == [[0], [0]]  # id 0 is end-of-sequence here: one step, then stop
    forced = greedy_generate(model, left_pad([[3, 4]], 1), 5, eos_token_id=0, pad_token_id=1, min_new_tokens=5)
    assert forced.shape == (1, 5)  # min_new_tokens forbids stopping early (timing runs use it)


def test_timing_counts_forced_tokens_at_each_batch_size(lm):
    pad = lm.tokenizer.pad_token_id
    prompts = _prompts(lm, ["the film is", "hello world", "positive", "the"])
    for size in (1, 4):
        timing = time_generation(lm.model, left_pad(prompts[:size], pad), new_tokens=5, repeats=2,
                                 warmup=1, threads=1, pad_token_id=pad)  # fmt: skip
        assert timing.batch_size == size and timing.new_tokens == 5 and len(timing.ttft_runs_ms) == 2
        assert timing.ttft_p50_ms > 0 and timing.decode_tokens_per_s > 0
        assert timing.threads == 1
    with pytest.raises(ValueError, match="new_tokens must be >= 2"):
        time_generation(lm.model, left_pad(prompts, pad), new_tokens=1)


def test_footprint_counts_generated_tokens_only(lm):
    pad = lm.tokenizer.pad_token_id
    batch = left_pad(_prompts(lm, ["the film is", "hello"]), pad)
    fp = generation_footprint(lm.model, batch, tokens=25, new_tokens=4, pad_token_id=pad)
    # ceil(25 / (2 rows x 4 tokens)) = 4 calls -> 32 tokens.
    assert fp.unit == "token" and fp.units == 32 and fp.energy_j > 0


def test_a_module_without_generate_is_a_clear_error():
    with pytest.raises(ModelError, match="has no generate"):
        greedy_generate(nn.Linear(2, 2), left_pad([[1, 2]], 0), 3, eos_token_id=None, pad_token_id=0)


def test_left_pad_keeps_real_tokens_last():
    batch = left_pad([[7, 8, 9], [5]], pad_id=0)
    assert batch["input_ids"].tolist() == [[7, 8, 9], [0, 0, 5]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
