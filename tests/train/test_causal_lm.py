"""Training a causal LM: the masked loss, per-token accounting, checkpointing, LoRA invariants."""

import pytest
import torch
from torch import nn

from lowcarb.adapt import lora, peft_format
from lowcarb.data import DataConfig
from lowcarb.data.lm import load_lm_data
from lowcarb.models import ModelConfig
from lowcarb.models.causal_lm import build_causal_lm
from lowcarb.train import TrainConfig
from lowcarb.train.causal_lm import (
    IGNORE_INDEX,
    CountingLoader,
    causal_lm_loss,
    fit_causal_lm,
    token_nll_sum,
)

LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture
def llama(tiny_llama_folder):
    return build_causal_lm(ModelConfig(name=str(tiny_llama_folder)))


@pytest.fixture
def gpt2(tiny_gpt2_folder):
    return build_causal_lm(ModelConfig(name=str(tiny_gpt2_folder)))


def _bundle(tmp_path, n=24):
    rows = [f'{{"prompt": "the film {i} is", "response": "{"great" if i % 2 else "awful"}"}}' for i in range(n)]
    (tmp_path / "t.jsonl").write_text("\n".join(rows) + "\n")
    return load_lm_data(DataConfig(train=tmp_path / "t.jsonl", max_length=64, dev_fraction=0.25, test_fraction=0.0))


def _batch(handle, bundle, size=4):
    return next(iter(bundle.loader("train", size, tokenizer=handle.tokenizer)))


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_loss_equals_transformers_own_masked_loss(name, request, tmp_path):
    handle = request.getfixturevalue(name)
    batch = _batch(handle, _bundle(tmp_path))
    assert (batch["labels"] == IGNORE_INDEX).any() and (batch["labels"] != IGNORE_INDEX).any()
    handle.model.eval()
    with torch.no_grad():
        ours, logits = causal_lm_loss(handle.model, batch)
        theirs = handle.model(**batch).loss  # shifts and ignores -100 itself, on all logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # Only the positions from the first response token on were computed.
    assert logits.shape[1] < batch["input_ids"].shape[1] - 1


def test_loss_is_the_mean_nll_of_the_response_tokens_only(llama, tmp_path):
    batch = _batch(llama, _bundle(tmp_path))
    with torch.no_grad():
        ours, _ = causal_lm_loss(llama.model, batch)
        logits = llama.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    log_probs = logits[:, :-1].log_softmax(-1)
    targets = batch["labels"][:, 1:]
    taught = targets != IGNORE_INDEX
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(ours, -picked[taught].mean(), rtol=1e-5, atol=1e-6)
    # Prompt positions would give a different figure: the mask matters.
    assert not torch.isclose(ours, -picked[batch["attention_mask"][:, 1:] == 1].mean())
    nll, count = token_nll_sum(llama.model, batch)
    assert count == int(taught.sum())
    assert nll / count == pytest.approx(float(ours), rel=1e-5)


def test_fit_counts_tokens_energy_and_peak_memory(llama, tmp_path):
    bundle = _bundle(tmp_path)
    loader = bundle.loader("train", 4, shuffle=True, tokenizer=llama.tokenizer, seed=0)
    expected_tokens = sum(int(b["attention_mask"].sum()) for b in loader)
    before, _ = causal_lm_loss(llama.model, _batch(llama, bundle, 18))
    result = fit_causal_lm(llama.model, loader, TrainConfig(epochs=3, lr=3e-3, quiet=True))
    after, _ = causal_lm_loss(llama.model, _batch(llama, bundle, 18))
    assert float(after) < float(before)  # it learned the responses
    assert result.train_tokens == 3 * expected_tokens
    assert result.tokens_per_s > 0 and result.j_per_1k_tokens == pytest.approx(1000 * result.energy_j / result.train_tokens)
    assert result.footprint["unit"] == "token" and result.footprint["units"] == result.train_tokens
    assert result.peak_memory_bytes >= result.start_memory_bytes > 0
    summary = result.to_dict()
    assert summary["steps"] == result.fit.steps and "history" not in summary


def test_counting_loader_counts_what_it_hands_out():
    batches = [{"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]]),
                "labels": torch.tensor([[-100, 5, -100], [-100, 6, 7]])}]  # fmt: skip
    counter = CountingLoader(batches)
    assert len(counter) == 1 and list(counter) == batches
    assert (counter.tokens, counter.target_tokens, counter.batches) == (5, 3, 1)


def test_gradient_checkpointing_gives_the_same_updates(tmp_path, tiny_llama_folder):
    weights, during = [], []
    for on in (False, True):
        handle = build_causal_lm(ModelConfig(name=str(tiny_llama_folder)))
        loader = _bundle(tmp_path).loader("train", 4, tokenizer=handle.tokenizer)

        def watch(step, model):
            during.append(model.is_activation_checkpointing)
            return False

        config = TrainConfig(max_steps=2, lr=1e-2, quiet=True, gradient_checkpointing=on)
        result = fit_causal_lm(handle.model, loader, config, on_step=watch)
        assert result.gradient_checkpointing is on
        assert not handle.model.is_activation_checkpointing  # switched off again after training
        weights.append(handle.model.model.layers[0].mlp.up_proj.weight.detach().clone())
    assert during == [False, False, True, True]
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_on_a_plain_module_is_a_clear_error():
    from lowcarb.errors import ModelError

    class Plain(nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return torch.zeros(*input_ids.shape, 5, requires_grad=True)

    batch = {"input_ids": torch.ones(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 3, dtype=torch.long),
             "labels": torch.tensor([[-100, 1, 2]])}  # fmt: skip
    with pytest.raises(ModelError, match="gradient checkpointing"):
        fit_causal_lm(Plain(), [batch], TrainConfig(max_steps=1, gradient_checkpointing=True, quiet=True))


@pytest.mark.parametrize("targets", [LLAMA_PROJECTIONS, "all-linear"])
def test_lora_on_the_llm_merged_equals_unmerged(llama, tmp_path, targets):
    bundle = _bundle(tmp_path)
    summary = lora.apply(llama.model, lora.LoraConfig(r=4, alpha=8, target_modules=targets))
    assert len(summary.modules_changed) == 2 * len(LLAMA_PROJECTIONS)  # lm_head is left alone
    fit_causal_lm(llama.model, bundle.loader("train", 4, shuffle=True, tokenizer=llama.tokenizer),
                  TrainConfig(max_steps=3, lr=1e-2, quiet=True))  # fmt: skip
    batch = _batch(llama, bundle)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    llama.model.eval()
    with torch.no_grad():
        unmerged = llama.model(**inputs).logits
        lora.merge(llama.model)
        merged = llama.model(**inputs).logits
        plain = lora.merge_and_unload(llama.model)(**inputs).logits
    assert not torch.equal(unmerged, llama.model(**inputs).logits * 0)  # adapters trained (non-zero)
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(plain, unmerged, rtol=1e-4, atol=1e-5)


def test_lora_adapter_in_peft_format_loads_into_peft(llama, tiny_llama_folder, tmp_path):
    peft = pytest.importorskip("peft")  # the dev extra installs it; the cross-check runs in CI
    bundle = _bundle(tmp_path)
    lora.apply(llama.model, lora.LoraConfig(r=4, alpha=8, target_modules=LLAMA_PROJECTIONS))
    fit_causal_lm(llama.model, bundle.loader("train", 4, tokenizer=llama.tokenizer),
                  TrainConfig(max_steps=2, lr=1e-2, quiet=True))  # fmt: skip
    folder = peft_format.save_peft(llama.model, tmp_path / "adapter")
    base = build_causal_lm(ModelConfig(name=str(tiny_llama_folder))).model
    theirs = peft.PeftModel.from_pretrained(base, str(folder))
    batch = _batch(llama, bundle)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    llama.model.eval()
    theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(**inputs).logits, llama.model(**inputs).logits, rtol=1e-4, atol=1e-5)
