"""The prior: sampling respects pi, the score-function update, files and warm starts."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _parsec_tiny import tiny_cnn

from lowcarb.search.parsec import Decision, Prior, Space, make_space
from lowcarb.search.parsec.parsec import importance_weights
from lowcarb.search.parsec.space import Built


def _space(extra: bool = False) -> Space:
    decisions = {"op": ("good", "bad", "worse"), "width": (8, 16)}
    if extra:
        decisions["depth"] = (1, 2, 3)
    return make_space(decisions, lambda a: Built(torch.nn.Identity(), {}), name="toy")


def test_sampling_respects_pi():
    space = _space()
    target = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    prior = Prior(space, {"op": torch.log(target)})
    g = torch.Generator().manual_seed(0)
    n = 4000
    counts = {"good": 0, "bad": 0, "worse": 0}
    widths = {8: 0, 16: 0}
    for _ in range(n):
        a = prior.sample(g)
        counts[a["op"]] += 1
        widths[a["width"]] += 1
    freq = torch.tensor([counts["good"], counts["bad"], counts["worse"]], dtype=torch.float64) / n
    assert torch.allclose(freq, target, atol=0.03)
    assert abs(widths[8] / n - 0.5) < 0.03  # an untouched decision stays uniform


def test_log_prob_is_the_sum_over_decisions():
    space = _space()
    prior = Prior(space, {"op": torch.log(torch.tensor([0.5, 0.25, 0.25]))})
    assert math.isclose(
        prior.log_prob({"op": "bad", "width": 16}), math.log(0.25) + math.log(0.5), rel_tol=1e-9
    )


def test_update_on_scripted_likelihood_moves_toward_the_better_choice():
    space = _space()
    prior = Prior(space)
    g = torch.Generator().manual_seed(0)
    loglik = {"good": -0.1, "bad": -1.0, "worse": -2.0}  # a scripted validation likelihood
    for _ in range(40):
        archs = [prior.sample(g) for _ in range(4)]
        weights = importance_weights([loglik[a["op"]] for a in archs], scale=5.0)
        prior.update(archs, weights, lr=0.5)
    p = prior.probs("op")
    assert p[0] > 0.8 and p[0] > p[1] > 0 and p[1] >= p[2]
    assert prior.most_probable()["op"] == "good"


def test_update_rejects_bad_weights():
    prior = Prior(_space())
    a = {"op": "good", "width": 8}
    with pytest.raises(ValueError, match="sum to 1"):
        prior.update([a, a], [0.5, 0.6], lr=1.0)
    with pytest.raises(ValueError, match="one weight per architecture"):
        prior.update([a], [0.5, 0.5], lr=1.0)


def test_save_and_warm_start_into_a_larger_space(tmp_path):
    prior = Prior(_space(), {"op": torch.tensor([2.0, 0.0, -1.0])})
    path = prior.save(tmp_path / "prior.json")
    loaded = Prior.load(path, _space())
    assert torch.allclose(loaded.probs("op"), prior.probs("op"))
    larger = Prior.load(path, _space(extra=True))  # the new decision starts uniform
    assert torch.allclose(larger.probs("op"), prior.probs("op"))
    assert torch.allclose(larger.probs("depth"), torch.full((3,), 1 / 3, dtype=torch.float64))


def test_warm_start_errors(tmp_path):
    path = Prior(_space()).save(tmp_path / "prior.json")
    other = make_space(
        {"op": ("good", "bad")}, lambda a: Built(torch.nn.Identity(), {}), name="toy"
    )
    with pytest.raises(ValueError, match="same choices"):
        Prior.load(path, other)
    with pytest.raises(ValueError, match="not 'cnn'"):
        Prior.load(path, tiny_cnn())
    with pytest.raises(ValueError, match="no saved prior"):
        Prior.load(tmp_path / "missing.json", _space())
    (tmp_path / "junk.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a lowcarb PARSEC prior"):
        Prior.load(tmp_path / "junk.json", _space())
    with pytest.raises(ValueError, match="shape"):
        Prior(_space(), {"op": torch.zeros(2)})


def test_decision_index_error():
    with pytest.raises(ValueError, match="choose one of"):
        Decision("op", ("a", "b")).index("c")
