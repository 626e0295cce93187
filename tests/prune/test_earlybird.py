"""Early-bird search: mask distance, the stop rule on scripted masks, search and apply end to end."""

from __future__ import annotations

import pytest
import torch

from lowcarb.models.cnn import DigitsCNN
from lowcarb.prune import bert_structure
from lowcarb.prune.earlybird import (
    EarlyBirdConfig,
    StopRule,
    apply,
    mask_distance,
    search,
    search_keeping_weights,
)
from lowcarb.train.config import TrainConfig
from tests.prune.test_bert_structure import inputs, tiny_bert


def m(*bits, **groups):
    if bits:
        groups = {"g": bits}
    return {k: torch.tensor(v, dtype=torch.bool) for k, v in groups.items()}


def test_mask_distance_is_normalised_hamming():
    assert mask_distance(m(1, 1, 0, 0), m(1, 1, 0, 0)) == 0.0
    assert mask_distance(m(1, 1, 0, 0), m(1, 0, 0, 1)) == pytest.approx(0.5)
    assert mask_distance(m(1, 1, 1, 1), m(0, 0, 0, 0)) == 1.0
    # Several groups: the worst group counts, so a small group is not drowned out by a large one.
    a = m(heads=[1, 1, 0, 0], ffn=[1] * 100)
    b = m(heads=[0, 1, 1, 0], ffn=[1] * 100)
    assert mask_distance(a, b) == pytest.approx(0.5)


def test_mask_distance_rejects_mismatched_masks():
    with pytest.raises(ValueError, match="different groups"):
        mask_distance(m(heads=[1]), m(ffn=[1]))
    with pytest.raises(ValueError, match="shapes"):
        mask_distance(m(1, 0), m(1, 0, 1))


def test_stop_rule_on_scripted_masks():
    # 10-entry masks; each step flips the number of entries given: distances 0.5, 0.3, 0, 0.1, 0,
    # 0, 0, 0.  With threshold 0.1 and window 5 the last four distances must all be < 0.1.
    flips = [5, 3, 0, 1, 0, 0, 0, 0]
    mask = torch.zeros(10, dtype=torch.bool)
    rule = StopRule(threshold=0.1, window=5)
    fired = [rule.add({"g": mask.clone()})]
    for n in flips:
        mask = mask.clone()
        mask[:n] = ~mask[:n]
        fired.append(rule.add({"g": mask}))
    assert rule.distances == pytest.approx([0.5, 0.3, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0])
    # 0.1 is not below 0.1: the rule first fires when 0.1 has left the window of four distances.
    assert fired == [False] * 8 + [True]


def test_stop_rule_needs_a_full_window():
    rule = StopRule(threshold=0.5, window=3)
    same = {"g": torch.ones(4, dtype=torch.bool)}
    assert [rule.add(same) for _ in range(4)] == [False, False, True, True]


@pytest.mark.parametrize("kwargs, match", [
    ({"head_prune_ratio": 1.0}, "head_prune_ratio"),
    ({"ffn_prune_ratio": -0.1}, "ffn_prune_ratio"),
    ({"l1_coef": -1}, "l1_coef"),
    ({"mask_every_steps": 0}, "mask_every_steps"),
    ({"window": 1}, "window"),
    ({"distance_threshold": 0}, "distance_threshold"),
    ({"max_search_steps": 3, "mask_every_steps": 5}, "max_search_steps"),
])
def test_bad_config_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyBirdConfig(**kwargs)


def text_batches(n: int = 12) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 40, (4, 9), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                    "labels": (ids[:, 0] % 3)})
    return out


QUIET = TrainConfig(lr=1e-3, quiet=True, warmup_ratio=0.0)


def test_search_stops_by_itself_and_leaves_model_untouched():
    model = tiny_bert()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    # A threshold of 1.0 is met by any two masks that are not complete opposites: the rule
    # fires as soon as the window is full, at step mask_every_steps * window.
    cfg = EarlyBirdConfig(mask_every_steps=2, window=3, distance_threshold=1.0,
                          max_search_steps=40)
    ticket = search(model, text_batches(), cfg, QUIET)
    assert ticket.stopped_early and ticket.stop_step == 6
    assert ticket.mask_steps == (2, 4, 6) and len(ticket.distances) == 2
    assert ticket.stop_fraction_of_epoch == pytest.approx(6 / 12)
    assert set(model.state_dict()) == set(state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert not hasattr(model, bert_structure.COEFFICIENTS_ATTR)


def test_search_bounded_by_max_length():
    # Only 7 masks fit in 15 steps, fewer than the window of 8: the rule cannot fire.
    cfg = EarlyBirdConfig(mask_every_steps=2, window=8, max_search_steps=15)
    two_epochs = TrainConfig(epochs=2, lr=1e-3, quiet=True, warmup_ratio=0.0)
    ticket = search(tiny_bert(), text_batches(), cfg, two_epochs)
    assert ticket.stop_step == 15 and not ticket.stopped_early
    assert ticket.mask_steps == (2, 4, 6, 8, 10, 12, 14)  # runs into the second epoch
    # The training it starts is the other bound: one epoch of 12 steps ends the search at 12.
    assert search(tiny_bert(), text_batches(), cfg, QUIET).stop_step == 12


def test_ticket_ratios_and_apply_on_pretrained_weights():
    cfg = EarlyBirdConfig(mask_every_steps=2, window=3, distance_threshold=1.0,
                          max_search_steps=20, l1_coef=1e-2)
    model = tiny_bert()
    ticket = search(model, text_batches(), cfg, QUIET)
    assert ticket.kept() == {"heads": 2 * 4, "ffn": 40 - 16}  # 1/3 of 6 heads, 40 % of 40 neurons
    summary = apply(model, ticket)
    assert summary.params_after < summary.params_before
    assert summary["kept"] == ticket.kept() and summary["total"] == {"heads": 12, "ffn": 40}
    layers = bert_structure.find_layers(model)
    assert [la.attention.self.num_attention_heads for la in layers] == [4, 4]
    assert model(**inputs()).logits.shape == (4, 3)
    with pytest.raises(ValueError, match="already pruned"):
        apply(model, ticket)


def test_cnn_search_and_channel_removal():
    torch.manual_seed(0)
    model = DigitsCNN((1, 8, 8), 10, channels=(8, 16))
    g = torch.Generator().manual_seed(0)
    batches = [{"pixel_values": torch.randn(8, 1, 8, 8, generator=g),
                "labels": torch.randint(0, 10, (8,), generator=g)} for _ in range(10)]
    cfg = EarlyBirdConfig(channel_prune_ratio=0.5, mask_every_steps=2, window=3,
                          distance_threshold=1.0, max_search_steps=30)
    ticket = search(model, batches, cfg, QUIET)
    assert ticket.stopped_early and ticket.stop_step == 6
    assert ticket.kept() == {"channels": 12}
    summary = apply(model, ticket)
    assert model.features[0].out_channels + model.features[3].out_channels == 12
    assert summary.params_after < summary.params_before
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_model_without_prunable_structure_rejected():
    with pytest.raises(ValueError, match="neither BERT-like layers nor BatchNorm2d"):
        search(torch.nn.Linear(4, 2), [{"x": torch.zeros(1, 4)}], EarlyBirdConfig(), QUIET)


def test_search_keeping_weights_returns_the_searched_model_plain():
    cfg = EarlyBirdConfig(mask_every_steps=2, window=3, distance_threshold=1.0,
                          max_search_steps=20, l1_coef=1e-2)
    model = tiny_bert()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ticket, searched = search_keeping_weights(model, text_batches(), cfg, QUIET)
    assert ticket == search(tiny_bert(), text_batches(), cfg, QUIET)  # the same ticket as search
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())  # input untouched
    assert not hasattr(searched, bert_structure.COEFFICIENTS_ATTR)
    assert set(searched.state_dict()) == set(state)
    # The searched weights moved away from the pretrained ones (lr 1e-3 over 6 steps).
    moved = searched.bert.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(moved, model.bert.encoder.layer[0].attention.self.query.weight)
    apply(searched, ticket)
    assert searched(**inputs()).logits.shape == (4, 3)


def test_search_keeping_weights_on_a_cnn():
    torch.manual_seed(0)
    model = DigitsCNN((1, 8, 8), 10, channels=(8, 16))
    g = torch.Generator().manual_seed(0)
    batches = [{"pixel_values": torch.randn(8, 1, 8, 8, generator=g),
                "labels": torch.randint(0, 10, (8,), generator=g)} for _ in range(10)]
    cfg = EarlyBirdConfig(mask_every_steps=2, window=3, distance_threshold=1.0, max_search_steps=30)
    ticket, searched = search_keeping_weights(model, batches, cfg, QUIET)
    apply(searched, ticket)
    assert searched.features[0].out_channels + searched.features[3].out_channels == 12
