"""BERT heads/neurons: coefficient hooks, masks and ratios, physical removal == masked model."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lowcarb.prune import bert_structure as bs


def tiny_bert(layers: int = 2, heads: int = 6, inter: int = 20) -> BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=40, hidden_size=24, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=inter,
                     max_position_embeddings=16, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def inputs() -> dict:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[1, 6:] = 0  # padding: attention masks must still line up after removal
    return {"input_ids": torch.randint(0, 40, (4, 9), generator=g), "attention_mask": mask}


def test_coefficients_start_at_one_and_change_nothing():
    model = tiny_bert()
    base = model(**inputs()).logits
    coefs = bs.attach(model)
    assert all(torch.equal(p, torch.ones_like(p)) for p in coefs.parameters())
    assert torch.allclose(model(**inputs()).logits, base, atol=1e-6)
    bs.detach(model)
    assert not hasattr(model, bs.COEFFICIENTS_ATTR)
    assert torch.allclose(model(**inputs()).logits, base, atol=1e-6)


def test_coefficients_scale_heads_and_neurons_and_get_gradients():
    model = tiny_bert().train()
    coefs = bs.attach(model)
    (model(**inputs()).logits.sum() + 1e-4 * coefs.l1()).backward()
    for p in coefs.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        before = model(**inputs()).logits
        coefs.heads[0][2] = 0.0
        assert not torch.allclose(model(**inputs()).logits, before)
    assert coefs.l1().item() == pytest.approx(2 * 6 + 2 * 20 - 1)


def _random_mask(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    heads = torch.rand(2, 6, generator=g) > 0.4
    ffn = torch.rand(2, 20, generator=g) > 0.5
    heads[:, 0] = True
    ffn[:, 0] = True
    return {"heads": heads, "ffn": ffn}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_physical_removal_equals_masked_model(seed):
    model = tiny_bert()
    mask = _random_mask(model, seed)
    masked = copy.deepcopy(model)
    bs.attach(masked)
    bs.apply_masks(masked, mask)  # pruned heads/neurons get coefficient 0, the rest 1
    expected = masked(**inputs()).logits
    changed = bs.prune(model, mask)
    assert len(changed) == 2
    got = model(**inputs()).logits
    assert torch.allclose(got, expected, atol=1e-5)
    for i, layer in enumerate(bs.find_layers(model)):
        n_heads, n_ffn = int(mask["heads"][i].sum()), int(mask["ffn"][i].sum())
        assert layer.attention.self.query.out_features == n_heads * 4  # head size 24 / 6
        assert layer.attention.self.value.weight.shape == (n_heads * 4, 24)
        assert layer.attention.output.dense.in_features == n_heads * 4
        assert layer.intermediate.dense.out_features == n_ffn
        assert layer.output.dense.in_features == n_ffn


def test_removal_with_sdpa_and_in_training_mode_runs():
    model = tiny_bert()
    bs.prune(model, _random_mask(model))
    model.train()
    out = model(**inputs(), labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    assert out.logits.shape == (4, 3)


def test_masks_respect_ratios_and_pick_smallest():
    model = tiny_bert(layers=3, heads=6, inter=20)
    coefs = bs.attach(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in coefs.parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 2 - 1)  # signs must not matter: |c| ranks
        coefs.heads[1].copy_(torch.tensor([0.9, -0.01, 0.5, 0.02, -0.8, 0.7]))
    mask = bs.masks(model, head_ratio=1 / 3, ffn_ratio=0.4)
    assert mask["heads"].shape == (3, 6) and mask["ffn"].shape == (3, 20)
    assert (mask["heads"].sum(1) == 4).all()  # 1/3 of 6 heads pruned in every layer
    assert mask["heads"][1].tolist() == [True, False, True, False, True, True]
    assert int((~mask["ffn"]).sum()) == round(0.4 * 60)  # 40 % pruned over all layers
    mags = torch.stack([p.detach().abs() for p in coefs.neurons])
    assert mags[~mask["ffn"]].max() <= mags[mask["ffn"]].min()


def test_ffn_global_ratio_keeps_one_neuron_per_layer():
    model = tiny_bert(layers=2, heads=6, inter=10)
    coefs = bs.attach(model)
    with torch.no_grad():
        coefs.neurons[0].fill_(0.001)  # layer 0 would lose every neuron under a pure global cut
    mask = bs.masks(model, head_ratio=0.0, ffn_ratio=0.5)
    assert int((~mask["ffn"]).sum()) == 10
    assert mask["ffn"][0].sum() >= 1
    assert mask["heads"].all()


def test_mismatched_mask_rejected():
    model = tiny_bert()
    with pytest.raises(ValueError, match="do not fit this model"):
        bs.prune(model, {"heads": torch.ones(3, 6, dtype=torch.bool),
                         "ffn": torch.ones(2, 20, dtype=torch.bool)})
    with pytest.raises(ValueError, match="every head"):
        bs.prune(model, {"heads": torch.zeros(2, 6, dtype=torch.bool),
                         "ffn": torch.ones(2, 20, dtype=torch.bool)})


def test_prune_with_coefficients_attached_rejected():
    model = tiny_bert()
    bs.attach(model)
    with pytest.raises(ValueError, match="detach"):
        bs.prune(model, _random_mask(model))
    with pytest.raises(ValueError, match="already has"):
        bs.attach(model)


def test_non_bert_model_rejected():
    with pytest.raises(ValueError, match="BERT-like"):
        bs.attach(torch.nn.Linear(3, 3))


def test_fold_multiplies_the_coefficients_into_the_weights():
    model = tiny_bert()
    coefs = bs.attach(model)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in coefs.parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 2 - 0.5)  # some negative, some above 1
    hooked = model(**inputs()).logits
    bs.fold(model)
    assert not hasattr(model, bs.COEFFICIENTS_ATTR)
    assert torch.allclose(model(**inputs()).logits, hooked, atol=1e-5)
    with pytest.raises(ValueError, match="no early-bird coefficients"):
        bs.fold(model)
