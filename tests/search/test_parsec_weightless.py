"""Weightless PARSEC: training-free scores, Kendall tau, rank weights, the search without training."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from _parsec_tiny import TINY_RETRAIN, digits, image_batch, text_batch, tiny_cnn, tiny_text

from lowcarb.search.parsec import WeightlessConfig, compare_scores, weightless
from lowcarb.search.parsec.scores import SCORES, gradnorm, kendall_tau, naswot, synflow
from lowcarb.search.parsec.weightless import best_score, rank_weights, score_architecture


def _archs(space, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [space.uniform_sample(g) for _ in range(n)]


@pytest.mark.parametrize("score", sorted(SCORES))
@pytest.mark.parametrize("make, batch", [(tiny_cnn, image_batch), (tiny_text, text_batch)])
def test_scores_are_deterministic_under_a_seed(score, make, batch):
    space = make()
    b = [batch()]
    for arch in _archs(space, 3):
        first = score_architecture(space, arch, b, score, seed=3)
        again = score_architecture(space, arch, b, score, seed=3)
        assert first == again and math.isfinite(first)


def test_scores_leave_the_model_untouched():
    space = tiny_cnn()
    model = space.build(_archs(space, 1)[0]).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for fn in (naswot, synflow, gradnorm):
        fn(model, [image_batch()])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_naswot_separates_distinct_patterns_better_than_identical_ones():
    space = tiny_cnn()
    model = space.build({d.name: d.choices[0] for d in space.decisions}).model
    varied = image_batch(8)
    same = {
        "pixel_values": varied["pixel_values"][:1].repeat(8, 1, 1, 1),
        "labels": varied["labels"],
    }
    assert naswot(model, [varied]) > naswot(model, [same])


def test_kendall_tau_known_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # tau-b with one tie in x: 5 concordant pairs, 0 discordant, 1 tie in x.
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(5 * 6))
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="equal-length"):
        kendall_tau([1], [1])


def test_rank_weights_follow_the_scores():
    w = rank_weights([3.0, -1.0, 10.0, 3.0], sharpness=4.0)
    assert sum(w) == pytest.approx(1.0)
    assert w[0] == pytest.approx(w[3])
    assert w[2] > w[0] > w[1]
    assert rank_weights([5.0], 4.0) == [1.0]


def test_compare_scores_and_best_score():
    space = tiny_cnn()
    archs = _archs(space, 4)
    comparison = compare_scores(
        space, [image_batch()], archs, [0.1, 0.5, 0.3, 0.9], scores=("naswot", "synflow")
    )
    assert set(comparison) == {"naswot", "synflow"}
    assert all(len(c["scores"]) == 4 for c in comparison.values())
    assert (
        best_score(
            {
                "a": {"kendall_tau": 0.1},
                "b": {"kendall_tau": 0.4},
                "c": {"kendall_tau": float("nan")},
            }
        )
        == "b"
    )
    with pytest.raises(ValueError, match=">= 3 architectures"):
        compare_scores(space, [image_batch()], archs[:2], [0.1, 0.2])


def test_weightless_search_trains_only_the_final_architectures(monkeypatch):
    import lowcarb.search.parsec.retrain as retrain

    calls = []
    real_fit = retrain.fit

    def counting_fit(*args, **kwargs):
        calls.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(retrain, "fit", counting_fit)
    config = WeightlessConfig(
        iterations=3, samples=4, batch_size=16, top=2, retrain=TINY_RETRAIN, score="synflow"
    )
    result = weightless.search(tiny_cnn(), digits(), config)
    assert len(calls) == len(result.candidates) <= 2  # no training during the search
    assert result.method == "weightless" and result.extra["score"] == "synflow"
    assert 1 <= result.evaluated <= 12
    assert result.search_footprint.name == "weightless:search"
    assert result.candidates[0].arch == result.prior.most_probable()


def test_weightless_config_errors():
    with pytest.raises(ValueError, match="unknown training-free score 'zen'"):
        WeightlessConfig(score="zen")
    with pytest.raises(ValueError, match="iterations"):
        WeightlessConfig(iterations=0)


def _synflow_on_a_copy(model, batches):
    """The score computed the old way, on a float64 copy with |weights| (a second reference)."""
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.abs_()
    inputs = {
        k: torch.ones_like(v[:1], dtype=torch.float64) if v.is_floating_point() else v[:1]
        for k, v in batches[0].items()
        if k != "labels"
    }
    out = m(**inputs)
    (out if isinstance(out, torch.Tensor) else out.logits).sum().backward()
    with torch.no_grad():
        total = sum(float((p * p.grad).abs().sum()) for p in m.parameters() if p.grad is not None)
    return math.log10(total)


class _TwoLinear(torch.nn.Module):
    """x -> W2 relu(W1 x) with a .logits output, as a Hugging Face classifier returns."""

    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(2, 3, bias=False)
        self.second = torch.nn.Linear(3, 1, bias=False)

    def forward(self, pixel_values):
        return SimpleNamespace(logits=self.second(torch.relu(self.first(pixel_values))))


def test_synflow_of_two_linear_layers_is_the_closed_form():
    # With |W| and an all-ones input, R = 1^T |W2| |W1| 1 and every weight contributes
    # theta * dR/dtheta, which sums to R once per layer: the score is log10(2 R).
    torch.manual_seed(0)
    model = _TwoLinear()
    batch = {"pixel_values": torch.randn(4, 2), "labels": torch.zeros(4, dtype=torch.long)}
    w1, w2 = model.first.weight.detach().abs().double(), model.second.weight.detach().abs().double()
    r = float(w2 @ w1 @ torch.ones(2, dtype=torch.float64))
    assert synflow(model, [batch]) == pytest.approx(math.log10(2 * r), abs=1e-12)


def test_synflow_counts_a_weight_shared_by_two_layers_once_and_puts_it_back():
    # logits = |W| 1 + |W| 1 with one W in two layers: R = 2 * sum |W| is linear in |W|, so the
    # sum of theta * dR/dtheta over the distinct weights is R (counting W twice would give 2 R).
    torch.manual_seed(0)
    shared = torch.nn.Parameter(torch.randn(3, 2))

    class _Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(2, 3, bias=False), torch.nn.Linear(2, 3, bias=False)
            self.a.weight = self.b.weight = shared

        def forward(self, pixel_values):
            return SimpleNamespace(logits=self.a(pixel_values) + self.b(pixel_values))

    before = shared.detach().clone()
    batch = {"pixel_values": torch.randn(4, 2), "labels": torch.zeros(4, dtype=torch.long)}
    r = 2 * float(shared.detach().abs().double().sum())
    assert synflow(_Tied(), [batch]) == pytest.approx(math.log10(r), abs=1e-12)
    assert torch.equal(shared.detach(), before) and shared.dtype == torch.float32


@pytest.mark.parametrize("make, batch", [(tiny_cnn, image_batch), (tiny_text, text_batch)])
def test_synflow_equals_the_score_computed_on_a_copy(make, batch):
    space = make()
    for arch in _archs(space, 3, seed=5):
        model = space.build(arch).model
        assert synflow(model, [batch()]) == pytest.approx(
            _synflow_on_a_copy(model, [batch()]), abs=1e-12
        )


def test_synflow_uses_the_running_statistics_and_leaves_every_module_as_it_was():
    space = tiny_cnn()
    model = space.build(_archs(space, 1)[0]).model.train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms, "the tiny CNN space has BatchNorm"
    with torch.no_grad():
        for i, bn in enumerate(norms):
            bn.running_mean.fill_(0.5 + i)
            bn.running_var.fill_(2.0 + i)
    norms[0].eval()  # mixed modes must come back mixed
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    assert synflow(model, [image_batch()]) == pytest.approx(
        _synflow_on_a_copy(model, [image_batch()]), abs=1e-12
    )
    assert [m.training for m in model.modules()] == modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.dtype == before[k].dtype, k
    assert all(p.grad is None for p in model.parameters())


def test_synflow_leaves_frozen_weights_out_and_says_what_to_do_when_all_are_frozen():
    space = tiny_cnn()
    model = space.build(_archs(space, 1)[0]).model
    everything = synflow(model, [image_batch()])
    next(model.parameters()).requires_grad_(False)
    assert synflow(model, [image_batch()]) < everything
    assert synflow(model, [image_batch()]) == pytest.approx(
        _synflow_on_a_copy(model, [image_batch()]), abs=1e-12
    )
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="unfreeze the weights to score, or use the naswot score"):
        synflow(model, [image_batch()])


def test_synflow_puts_the_weights_back_when_the_forward_pass_fails():
    space = tiny_cnn()
    model = space.build(_archs(space, 1)[0]).model
    params = list(model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def boom(_module, _inputs, _output):
        raise RuntimeError("boom")

    handle = model.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        synflow(model, [image_batch()])
    handle.remove()
    assert list(model.parameters()) == params  # the same Parameter objects, not replacements
    for k, v in model.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k
    assert all(m.training for m in model.modules())


def test_naswot_leaves_mixed_training_modes_as_they_were():
    space = tiny_cnn()
    model = space.build(_archs(space, 1)[0]).model.train()
    next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).eval()
    modes = [m.training for m in model.modules()]
    naswot(model, [image_batch()])
    assert [m.training for m in model.modules()] == modes


def test_naswot_scores_an_eval_model_in_training_mode_and_leaves_it_in_eval():
    space = tiny_cnn()
    model = space.build(_archs(space, 1)[0]).model
    batch = [image_batch()]
    in_training = naswot(model.train(), batch)
    in_eval = naswot(model.eval(), batch)
    assert in_eval == in_training  # BatchNorm used batch statistics both times
    assert not any(m.training for m in model.modules())


def test_scores_call_a_train_override_and_restore_each_flag():
    calls: list[bool] = []

    class Frozen(torch.nn.BatchNorm2d):
        def train(self, mode: bool = True) -> Frozen:
            calls.append(mode)
            return super().train(mode)

    space = tiny_cnn()
    model = space.build(_archs(space, 1)[0]).model.train()
    model.add_module("frozen_bn", Frozen(1))  # unused in forward: only its train() is watched
    synflow(model, [image_batch()])
    assert calls == [False]  # put in eval through train(), as nn.Module.eval() would
    assert all(m.training for m in model.modules())


def test_flags_an_overriding_train_sets_are_put_back_too():
    class EvalChild(torch.nn.Module):
        """Its train() always leaves its child in eval mode (as frozen-BN wrappers do)."""

        def __init__(self) -> None:
            super().__init__()
            self.child = torch.nn.Dropout()

        def train(self, mode: bool = True) -> EvalChild:
            super().train(mode)
            self.child.train(False)
            return self

    space = tiny_cnn()
    model = space.build(_archs(space, 1)[0]).model.eval()
    model.add_module("wrapper", EvalChild())  # unused in forward: only its flags are watched
    model.wrapper.child.training = True  # set by hand: train() would never leave it so
    modes = [m.training for m in model.modules()]
    naswot(model, [image_batch()])  # switches to training mode through model.train(True)
    assert [m.training for m in model.modules()] == modes
