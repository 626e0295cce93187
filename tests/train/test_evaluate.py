import pytest
import torch
from sklearn.metrics import f1_score

from lowcarb.train import evaluate, logits_of, macro_f1

from .conftest import TinyNet, make_batches


def test_macro_f1_matches_scikit_learn():
    g = torch.Generator().manual_seed(0)
    y_true = torch.randint(0, 4, (200,), generator=g)
    y_pred = torch.where(torch.rand(200, generator=g) < 0.6, y_true, torch.randint(0, 5, (200,), generator=g))
    assert macro_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_evaluate_counts_every_example():
    model = TinyNet()
    with torch.no_grad():
        model.linear.weight.copy_(torch.eye(3, 4))
        model.linear.bias.zero_()
    batches = make_batches(3, batch_size=10) + make_batches(1, batch_size=5, seed=9)
    metrics = evaluate(model, batches)
    assert metrics["examples"] == 35
    assert metrics["accuracy"] == 1.0 and metrics["macro_f1"] == 1.0  # the oracle
    assert metrics["loss"] > 0
    model.linear.weight.data.mul_(-1)
    assert evaluate(model, batches)["accuracy"] < 0.2


def test_evaluate_restores_training_mode_and_rejects_empty():
    model = TinyNet().train()
    evaluate(model, make_batches(1))
    assert model.training
    with pytest.raises(ValueError, match="empty loader"):
        evaluate(model, [])


def test_logits_of_accepts_tensors_and_hf_outputs():
    t = torch.zeros(2, 3)

    class Out:
        logits = t

    assert logits_of(t) is t and logits_of(Out()) is t and logits_of((t, None)) is t
    with pytest.raises(TypeError, match="logits"):
        logits_of({"nope": 1})
