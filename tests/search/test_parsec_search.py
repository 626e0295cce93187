"""PARSEC: one architecture materialised per step, the shared weight store, the search end to end."""

from __future__ import annotations

import weakref

import pytest
import torch
from _parsec_tiny import TINY_RETRAIN, digits, image_batch, tiny_cnn
from torch import nn

from lowcarb.search.parsec import ParsecConfig, Prior, Space, WeightStore, parsec
from lowcarb.search.parsec.parsec import parsec_step
from lowcarb.search.parsec.space import Built


def _tiny_config(**kw) -> ParsecConfig:
    base = dict(
        iterations=3,
        samples=2,
        batch_size=16,
        val_batch_size=16,
        warmup_iterations=0,
        top=2,
        retrain=TINY_RETRAIN,
    )
    return ParsecConfig(**{**base, **kw})


def test_only_one_architectures_modules_are_alive_per_step():
    inner = tiny_cnn()
    alive: list[weakref.ref] = []
    max_alive = []

    def build(arch):
        # No gc.collect(): the previous architecture must be freed by reference counting alone,
        # the moment the step is over.
        live = [r for r in alive if r() is not None]
        max_alive.append(len(live))  # models still alive when the next one is built
        built = inner.build_fn(arch)
        for m in built.model.modules():
            alive.append(weakref.ref(m))
        return built

    space = Space(inner.name, inner.decisions, build, input_kind="image")
    result = parsec.search(space, digits(), _tiny_config(top=1))
    assert len(max_alive) == 3 * 2 + 1  # 6 search steps + 1 retraining
    assert max(max_alive[:6]) == 0  # no other architecture's module exists during a search step
    assert result.extra["weight_store_keys"] >= 2


def test_step_reads_and_writes_the_shared_weight_store():
    space = tiny_cnn()
    base = {d.name: d.choices[0] for d in space.decisions}
    a = {**base, "node0.op0": "conv3x3", "node0.op1": "conv5x5"}
    b = {**base, "node0.op0": "conv3x3", "node0.op1": "sepconv3x3"}  # shares node0.op0=conv3x3
    store = WeightStore()
    batch = image_batch(8)
    cfg = _tiny_config()
    torch.manual_seed(0)
    parsec_step(space, a, store, batch, batch, cfg)
    key = "cell0/node0.op0=conv3x3"
    after_a = {k: v.clone() for k, v in store.state[key].items()}
    # b starts from a's trained conv3x3 weights (not a fresh init) and moves them again.
    built_b = space.build(b)
    store.load_into(built_b.parts)
    assert torch.equal(built_b.parts[key][1].weight, after_a["1.weight"])
    parsec_step(space, b, store, batch, batch, cfg)
    assert not torch.equal(store.state[key]["1.weight"], after_a["1.weight"])
    assert "cell0/node0.op1=conv5x5" in store and "cell0/node0.op1=sepconv3x3" in store
    assert set(store.momentum) >= {key}


def test_sgd_step_clips_and_moves_against_the_gradient():
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    lin.weight.grad = torch.tensor([[30.0, 40.0]])  # norm 50
    WeightStore().sgd_step({"w": lin}, lr=0.1, momentum=0.9, weight_decay=0.0, clip_norm=5.0)
    assert torch.allclose(lin.weight, torch.tensor([[1 - 0.1 * 3.0, 1 - 0.1 * 4.0]]))


def test_search_end_to_end_saves_a_prior_that_warm_starts(tmp_path):
    space = tiny_cnn()
    result = parsec.search(space, digits(), _tiny_config())
    assert result.method == "parsec" and result.evaluated == 6
    assert 1 <= len(result.candidates) <= 2
    assert result.candidates[0].arch == result.prior.most_probable()
    assert 0.0 <= result.best.dev_accuracy <= 1.0 and result.best.test_accuracy is not None
    # Search and retraining are separate ledger windows.
    assert (
        result.search_footprint.name == "parsec:search"
        and result.retrain_footprint.name == "parsec:retrain"
    )
    assert result.search_footprint.energy_j > 0 and result.retrain_footprint.energy_j > 0
    # The prior moved away from uniform (warm-up 0, three updates).
    assert result.prior.entropy_nats() < Prior(space).entropy_nats()
    path = result.prior.save(tmp_path / "prior.json")
    warm = parsec.initial_prior(space, path)
    for d in space.decisions:
        assert torch.allclose(warm.probs(d.name), result.prior.probs(d.name))
    d = result.to_dict()
    assert d["search_energy_j"] == result.search_footprint.energy_j and d["best"]["key"]


def test_warm_start_is_used_by_the_search(tmp_path):
    space = tiny_cnn()
    logits = {d.name: torch.zeros(len(d.choices)) for d in space.decisions}
    for d in space.decisions:
        if ".op" in d.name:
            logits[d.name][d.choices.index("conv3x3")] = 50.0  # certain: conv3x3 everywhere
    path = Prior(space, logits).save(tmp_path / "prior.json")
    result = parsec.search(space, digits(), _tiny_config(iterations=1, warm_start=str(path), top=1))
    assert all(v == "conv3x3" for k, v in result.best.arch.items() if ".op" in k)


def test_search_rejects_mismatched_data_and_bad_config():
    from lowcarb.search.parsec import text_space

    with pytest.raises(ValueError, match="reads text data but the data is image"):
        parsec.search(text_space(), digits(), _tiny_config())
    with pytest.raises(ValueError, match="warmup_iterations"):
        ParsecConfig(iterations=3, warmup_iterations=3)
    with pytest.raises(ValueError, match="samples"):
        ParsecConfig(samples=0)


def test_built_type():
    assert isinstance(tiny_cnn().build({d.name: d.choices[0] for d in tiny_cnn().decisions}), Built)
