import importlib

import pytest
import torch
import torch.nn.functional as F

from lowcarb.train import TrainConfig, evaluate, fit, linear_warmup_decay, logits_of

from .conftest import TinyNet, make_batches

QUIET = {"quiet": True}


def test_fit_learns_and_reports(tiny, batches):
    dev = make_batches(4, seed=1)
    before = evaluate(tiny, dev)["accuracy"]
    result = fit(tiny, batches, dev, TrainConfig(epochs=5, lr=0.05, **QUIET))
    assert result.steps == 40 and result.stop_reason == "completed" and result.epochs == 5.0
    assert result.best_dev["accuracy"] > max(before, 0.8)
    assert len(result.history) == 5  # one dev evaluation per epoch
    assert result.to_dict()["stopped_early"] is False


def test_same_seed_same_result(batches):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = TinyNet()
        fit(model, batches, None, TrainConfig(epochs=2, lr=0.01, seed=3, **QUIET))
        runs.append(model.linear.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_max_steps_caps_training(tiny, batches):
    result = fit(tiny, batches, None, TrainConfig(epochs=3, max_steps=5, **QUIET))
    assert result.steps == 5 and result.stop_reason == "max_steps"


def test_on_step_is_called_every_step_and_stops(tiny, batches):
    seen = []

    def on_step(step, model):
        assert model is tiny
        seen.append(step)
        return step == 3

    result = fit(tiny, batches, None, TrainConfig(epochs=2, **QUIET), on_step=on_step)
    assert seen == [1, 2, 3]
    assert result.steps == 3 and result.stop_reason == "on_step" and result.stopped_early


def test_loss_fn_replaces_cross_entropy(tiny, batches):
    calls = []

    def loss_fn(model, batch):
        logits = logits_of(model(x=batch["x"]))
        calls.append(1)
        # Push every example to class 0, whatever its label: only this loss could do that.
        return F.cross_entropy(logits, torch.zeros_like(batch["labels"])), logits

    fit(tiny, batches, None, TrainConfig(epochs=3, lr=0.05, **QUIET), loss_fn=loss_fn)
    assert len(calls) == 24
    preds = torch.cat([tiny(x=b["x"]).argmax(-1) for b in batches])
    assert (preds == 0).float().mean() > 0.95


def test_extra_loss_changes_the_gradients(batches):
    def first_step_grad(extra):
        torch.manual_seed(0)
        model = TinyNet()
        grads = {}

        def capture(step, m):
            return True  # stop after the first step

        # Capture the gradient through a tiny lr: weights after one step differ iff grads differ.
        before = model.linear.weight.detach().clone()
        fit(model, batches[:1], None, TrainConfig(epochs=1, lr=1e-3, warmup_ratio=0.0, grad_clip_norm=None, weight_decay=0.0, **QUIET), extra_loss=extra, on_step=capture)
        grads["delta"] = model.linear.weight.detach() - before
        return grads["delta"]

    plain = first_step_grad(None)
    decayed = first_step_grad(lambda m: 100.0 * m.linear.weight.pow(2).sum())
    assert not torch.allclose(plain, decayed)
    # the penalty pulls large weights toward zero: the step moves against the weight's sign more
    torch.manual_seed(0)
    w0 = TinyNet().linear.weight.detach()
    assert ((decayed - plain) * w0).sum() < 0


def test_param_groups_replace_the_default(tiny, batches):
    frozen_bias = tiny.linear.bias.detach().clone()
    groups = [{"params": [tiny.linear.weight], "weight_decay": 0.0}]
    fit(tiny, batches, None, TrainConfig(epochs=1, lr=0.05, **QUIET), param_groups=groups)
    assert torch.equal(tiny.linear.bias, frozen_bias)


def test_only_trainable_parameters_are_trained_by_default(tiny, batches):
    tiny.linear.bias.requires_grad_(False)
    bias = tiny.linear.bias.detach().clone()
    fit(tiny, batches, None, TrainConfig(epochs=1, lr=0.05, **QUIET))
    assert torch.equal(tiny.linear.bias, bias)
    tiny.linear.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(tiny, batches, None, TrainConfig(**QUIET))


def test_early_stopping_restores_the_best_weights(tiny, batches):
    dev = make_batches(2, seed=1)

    snapshot = {}

    def sabotage(step, model):
        # After the first epoch, replace the weights by the negated epoch-1 classifier (an
        # anti-classifier) every step: dev accuracy can only get worse than at step 8.
        with torch.no_grad():
            if step == 8:
                snapshot["w"] = model.linear.weight.detach().clone()
            elif step > 8:
                model.linear.weight.copy_(-10.0 * snapshot["w"])
        return False

    result = fit(tiny, batches, dev, TrainConfig(epochs=10, lr=0.05, early_stopping_patience=2, **QUIET), on_step=sabotage)
    assert result.stop_reason == "early_stopping"
    assert result.steps < 80
    assert result.best_step == 8 and result.steps == 24  # epochs 2 and 3 are worse: patience 2
    assert evaluate(tiny, dev)["accuracy"] == pytest.approx(result.best_dev["accuracy"])
    assert torch.equal(tiny.linear.weight, snapshot["w"])  # best weights restored


def test_gradient_clipping_bounds_the_gradient_norm(batches):
    def first_grad_norm(clip):
        torch.manual_seed(0)
        model = TinyNet()
        norms: list[float] = []

        def record(step, m):
            # on_step runs after the optimiser step; .grad still holds the clipped gradient.
            norms.append(float(torch.cat([p.grad.flatten() for p in m.parameters()]).norm()))
            return True

        config = TrainConfig(epochs=1, lr=1e-3, grad_clip_norm=clip, warmup_ratio=0.0, **QUIET)
        fit(model, batches[:1], None, config, on_step=record)
        return norms[0]

    assert first_grad_norm(1e-4) == pytest.approx(1e-4, rel=1e-3)
    assert first_grad_norm(None) > 1e-3


def test_schedule_warms_up_then_decays_to_zero():
    f = linear_warmup_decay(warmup_steps=4, total_steps=10)
    values = [f(s) for s in range(11)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4] == 1.0 and values[10] == 0.0
    assert all(a >= b for a, b in zip(values[4:], values[5:], strict=False))


def test_errors_say_what_to_do(tiny, batches):
    with pytest.raises(ValueError, match="dev loader"):
        fit(tiny, batches, None, TrainConfig(early_stopping_patience=2, **QUIET))
    with pytest.raises(ValueError, match="no batches"):
        fit(tiny, [], None, TrainConfig(**QUIET))
    with pytest.raises(ValueError, match="train.lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="lower train.lr"):
        fit(tiny, batches, None, TrainConfig(**QUIET), extra_loss=lambda m: torch.tensor(float("nan")))


def test_param_groups_may_hold_generators_and_their_own_lr(tiny, batches):
    weight = tiny.linear.weight.detach().clone()
    groups = [{"params": (p for p in [tiny.linear.weight]), "lr": 0.0}, {"params": [tiny.linear.bias]}]
    fit(tiny, batches, None, TrainConfig(epochs=1, lr=0.05, weight_decay=0.0, **QUIET), param_groups=groups)
    assert torch.equal(tiny.linear.weight, weight)  # lr 0 in its own group: untouched


def test_progress_bar_shows_unless_quiet(tiny, batches, capsys):
    fit(tiny, batches, None, TrainConfig(epochs=1, quiet=True))
    assert capsys.readouterr().out == ""
    fit(tiny, batches, None, TrainConfig(epochs=1, quiet=False))
    shown = capsys.readouterr().out
    assert "train" in shown and "8/8" in shown and "loss" in shown


# ---------------------------------------------------------------------------------------------
# device and precision
# ---------------------------------------------------------------------------------------------


def _host_reads_allowed_on_meta(monkeypatch):
    """Meta tensors have no values: where a loop copies a value to the host (to_host), give
    zeros of the right shape, so the rest of the loop runs on the meta device unchanged."""
    # importlib: the package's `evaluate` attribute is the function, not the module.
    evaluate_module = importlib.import_module("lowcarb.train.evaluate")
    loop_module = importlib.import_module("lowcarb.train.loop")

    reads = []

    def to_host(t):
        reads.append(t.device)
        return torch.zeros(t.shape, dtype=t.dtype) if t.is_meta else t.detach().cpu()

    monkeypatch.setattr(loop_module, "to_host", to_host)
    monkeypatch.setattr(evaluate_module, "to_host", to_host)
    return reads


def test_fit_and_evaluate_run_where_the_model_is(monkeypatch):
    """A model on `meta` (the one non-CPU device this machine has): every tensor the loops make
    must follow the model's device, or an op mixing meta and CPU tensors raises."""
    reads = _host_reads_allowed_on_meta(monkeypatch)
    model = TinyNet().to("meta")
    train, dev = make_batches(4), make_batches(2, seed=1)  # CPU batches, as a loader gives them
    seen = []
    real_forward = model.forward

    def spy(x):
        seen.append(x.device)
        return real_forward(x)

    monkeypatch.setattr(model, "forward", spy)
    result = fit(model, train, dev, TrainConfig(epochs=2, **QUIET), extra_loss=lambda m: m.linear.weight.pow(2).sum())
    assert result.steps == 8 and len(result.history) == 2
    assert set(seen) == {torch.device("meta")}  # every batch was moved to the model's device
    assert all(p.device.type == "meta" for p in model.parameters())
    assert {d.type for d in reads} == {"meta"}  # only reads of values computed on the device
    metrics = evaluate(model, dev)
    assert metrics["examples"] == 32


def test_fit_reads_the_loss_every_few_steps_not_every_step(monkeypatch, tiny):
    reads = _host_reads_allowed_on_meta(monkeypatch)
    fit(tiny, make_batches(40), None, TrainConfig(epochs=1, **QUIET))
    assert len(reads) <= 4  # 40 steps: reads at 16, 32, the epoch end, the end of training


def test_evaluate_reads_the_device_once_per_call(monkeypatch, tiny):
    reads = _host_reads_allowed_on_meta(monkeypatch)
    evaluate(tiny, make_batches(10))
    assert len(reads) == 3  # predictions, labels and the loss sum, once each


def test_a_non_finite_loss_names_its_step_though_read_later(tiny):
    calls = {"n": 0}

    def blows_up_at_step_5(model):
        calls["n"] += 1
        return torch.tensor(float("nan") if calls["n"] == 5 else 0.0)

    with pytest.raises(ValueError, match=r"became nan at step 5; lower train.lr"):
        fit(tiny, make_batches(20), None, TrainConfig(epochs=1, **QUIET), extra_loss=blows_up_at_step_5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_under_autocast(precision, batches):
    torch.manual_seed(0)
    model = TinyNet()
    dtypes = []
    model.linear.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    dev = make_batches(4, seed=1)
    result = fit(model, batches, dev, TrainConfig(epochs=5, lr=0.05, precision=precision, **QUIET))
    expected = torch.bfloat16 if precision == "bf16" else torch.float16
    assert set(dtypes) == {expected}  # training and dev evaluation forward passes alike
    assert model.linear.weight.dtype == torch.float32  # master weights stay fp32
    assert result.best_dev["accuracy"] > 0.8


def test_fp16_steps_through_a_gradient_scaler(monkeypatch, batches):
    loop_module = importlib.import_module("lowcarb.train.loop")
    scalers = []
    real = loop_module.grad_scaler

    def spy(device, precision):
        scalers.append(real(device, precision))
        return scalers[-1]

    monkeypatch.setattr(loop_module, "grad_scaler", spy)
    fit(TinyNet(), batches, None, TrainConfig(epochs=1, precision="fp16", **QUIET))
    fit(TinyNet(), batches, None, TrainConfig(epochs=1, precision="bf16", **QUIET))
    assert isinstance(scalers[0], torch.amp.GradScaler) and scalers[0]._scale is not None
    assert scalers[1] is None
    with pytest.raises(ValueError, match="fp32, bf16 or fp16"):
        TrainConfig(precision="auto")  # resolved at the edge, never inside the loop


class _HeadNet(torch.nn.Module):
    """A body and a fresh head, named as Hugging Face classifiers name them."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(4, 4)
        self.classifier = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.body(x)))


def test_head_lr_gives_the_head_its_own_groups():
    from lowcarb.train import default_param_groups

    model = _HeadNet()
    groups = default_param_groups(model, 0.01, head_lr=0.5, head_modules=("classifier",))
    head = [g for g in groups if "lr" in g]
    assert [len(g["params"]) for g in head] == [1, 1]  # weight (decayed) and bias (not)
    assert {id(p) for g in head for p in g["params"]} == {id(p) for p in model.classifier.parameters()}
    assert sorted(g["weight_decay"] for g in head) == [0.0, 0.01]
    assert all(g["lr"] == 0.5 for g in head)
    # Without head_lr the groups are the plain two (decayed / not decayed).
    assert [("lr" in g) for g in default_param_groups(model, 0.01)] == [False, False]


@pytest.mark.parametrize(
    "name, modules, expected",
    [
        ("classifier.weight", ("classifier",), True),
        ("bert.pooler.dense.weight", ("pooler",), True),
        ("bert.pooler.dense.weight", ("pooler.dense",), True),
        ("classifier_x.weight", ("classifier",), False),
        ("bert.encoder.layer.0.weight", ("classifier", "score"), False),
    ],
)
def test_head_parameters_are_matched_by_dotted_module_path(name, modules, expected):
    from lowcarb.train.loop import is_head_parameter

    assert is_head_parameter(name, modules) is expected


def test_fit_steps_the_head_at_head_lr(batches):
    # One step of AdamW moves each weight by about lr (the first update is lr * sign(grad)):
    # with head_lr 100x lr, the head moves about 100x further than the body.
    torch.manual_seed(0)
    model = _HeadNet()
    body0, head0 = model.body.weight.detach().clone(), model.classifier.weight.detach().clone()
    cfg = TrainConfig(max_steps=1, lr=1e-4, head_lr=1e-2, warmup_ratio=0.0, weight_decay=0.0, quiet=True)
    fit(model, batches, None, cfg)
    body_step = (model.body.weight - body0).abs().max().item()
    head_step = (model.classifier.weight - head0).abs().max().item()
    assert body_step == pytest.approx(1e-4, rel=0.05)
    assert head_step == pytest.approx(1e-2, rel=0.05)


def test_head_lr_must_be_positive():
    with pytest.raises(ValueError, match="train.head_lr"):
        TrainConfig(head_lr=0.0)


def test_frozen_modules_get_no_gradient_and_are_trainable_again_after(batches):
    torch.manual_seed(0)
    model = _HeadNet()
    body0 = model.body.weight.detach().clone()
    seen = []

    def on_step(step, m):
        seen.append((m.body.weight.requires_grad, m.body.weight.grad is None))
        return False

    cfg = TrainConfig(max_steps=3, lr=1e-2, frozen_modules=("body",), quiet=True)
    fit(model, batches, None, cfg, on_step=on_step)
    assert torch.equal(model.body.weight, body0)  # not trained
    assert seen and all(state == (False, True) for state in seen)  # no gradient computed
    assert all(p.requires_grad for p in model.parameters())  # trainable again
    # The head did train.
    assert model.classifier.weight.grad is not None


def test_frozen_modules_that_match_nothing_are_an_error(batches):
    with pytest.raises(ValueError, match="frozen_modules"):
        fit(_HeadNet(), batches, None, TrainConfig(max_steps=1, frozen_modules=("embeddings",), quiet=True))


def test_make_adamw_is_fused_on_cpu_floats_and_plain_on_the_meta_device():
    from lowcarb.train import TrainConfig, default_param_groups, make_adamw

    config = TrainConfig(lr=1e-3, weight_decay=0.01)
    cpu = torch.nn.Linear(4, 2)
    fused = make_adamw(default_param_groups(cpu, 0.01), config)
    assert fused.defaults["fused"] is True
    # Biases (1-D) are not decayed, as fit() groups them.
    assert sorted(g["weight_decay"] for g in fused.param_groups) == [0.0, 0.01]
    meta = torch.nn.Linear(4, 2, device="meta")
    plain = make_adamw(default_param_groups(meta, 0.01), config)
    assert not plain.defaults.get("fused")
