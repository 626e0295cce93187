"""The muP learning-rate and weight-decay rules, parameter by parameter."""

from __future__ import annotations

import pytest
import torch

from lowcarb.search import mup
from lowcarb.search.mup import MupModelConfig, build_model

LR = 0.01
BASE, WIDTH = 16, 64  # m = 4

MATRIX = (
    "attn.q.weight",
    "attn.k.weight",
    "attn.v.weight",
    "attn.o.weight",
    "mlp.fc.weight",
    "mlp.proj.weight",
)


def _lrs(model, name="adamw", wd=0.0, parametrization=None):
    out, wds = {}, {}
    for g in mup.param_groups(model, name, LR, wd, parametrization):
        for n in g["names"]:
            out[n], wds[n] = g["lr"], g["weight_decay"]
    return out, wds


def _model(kind="lm", width=WIDTH, **kw):
    return build_model(
        MupModelConfig(kind=kind, width=width, base_width=BASE, vocab_size=13, max_len=8, **kw)
    )


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_rules(name):
    lrs, _ = _lrs(_model(), name)
    for b in range(2):
        for p in MATRIX:
            assert lrs[f"blocks.{b}.{p}"] == pytest.approx(LR * BASE / WIDTH), p
    for p in (
        "tok.weight",
        "pos.weight",
        "readout.weight",
        "readout.bias",
        "ln_f.weight",
        "blocks.0.attn.q.bias",
        "blocks.0.ln1.weight",
        "blocks.1.mlp.fc.bias",
    ):
        assert lrs[p] == pytest.approx(LR), p
    assert len(lrs) == sum(1 for _ in _model().parameters())


def test_sgd_rules():
    lrs, _ = _lrs(_model(), "sgd")
    for p in MATRIX:  # both dimensions grow by m: fan_out/fan_in multipliers cancel
        assert lrs[f"blocks.0.{p}"] == pytest.approx(LR), p
    for p in ("tok.weight", "pos.weight", "readout.weight", "ln_f.bias", "blocks.0.attn.v.bias"):
        assert lrs[p] == pytest.approx(LR * WIDTH / BASE), p
    assert lrs["readout.bias"] == pytest.approx(LR)


def test_mlp_input_layer_is_vector_like():
    lrs, _ = _lrs(_model("mlp", depth=3), "adamw")
    assert lrs["inp.weight"] == pytest.approx(LR)  # fan_in (d_in) is finite
    assert lrs["hidden.0.weight"] == pytest.approx(LR * BASE / WIDTH)
    assert lrs["readout.weight"] == pytest.approx(LR)


def test_standard_parametrization_keeps_the_base_lr_everywhere():
    lrs, _ = _lrs(_model(parametrization="sp"), "adamw")
    assert set(lrs.values()) == {LR}
    # ...and an explicit override wins over the model's own parametrization.
    lrs, _ = _lrs(_model(), "adamw", parametrization="sp")
    assert set(lrs.values()) == {LR}


def test_weight_decay_keeps_lr_times_decay_constant():
    lrs, wds = _lrs(_model(), "adamw", wd=0.1)
    for p in MATRIX:
        n = f"blocks.0.{p}"
        assert lrs[n] * wds[n] == pytest.approx(LR * 0.1), n
    assert wds["tok.weight"] == pytest.approx(0.1)
    assert wds["blocks.0.attn.q.bias"] == 0.0 and wds["ln_f.weight"] == 0.0


def test_decoupled_decay_shrinks_matrices_equally_at_every_width():
    shrink = {}
    for width in (BASE, 4 * BASE):
        model = _model(width=width)
        opt = mup.optimizer(model, "adamw", lr=LR, weight_decay=0.5)
        w = model.blocks[0].mlp.fc.weight
        before = w.detach().clone()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)  # no gradient: only the decay moves the weight
        opt.step()
        shrink[width] = (w.detach() / before).mean().item()
    assert shrink[BASE] == pytest.approx(1 - LR * 0.5)
    assert shrink[4 * BASE] == pytest.approx(shrink[BASE])


def test_optimizer_builds_torch_optimizers_with_the_groups():
    model = _model()
    opt = mup.optimizer(model, "adamw", lr=LR, betas=(0.8, 0.9))
    assert isinstance(opt, torch.optim.AdamW)
    assert {g["lr"] for g in opt.param_groups} == {LR, LR * BASE / WIDTH}
    assert isinstance(mup.optimizer(model, "sgd", lr=LR, momentum=0.9), torch.optim.SGD)


def test_bad_optimizer_arguments():
    model = _model()
    with pytest.raises(ValueError, match="unknown optimizer"):
        mup.optimizer(model, "lion", lr=LR)
    with pytest.raises(ValueError, match="positive"):
        mup.optimizer(model, "adamw", lr=0.0)
    with pytest.raises(ValueError, match="use 'adamw'"):
        mup.optimizer(model, "adam", lr=LR, weight_decay=0.1)
    with pytest.raises(ValueError, match="'mup' or 'sp'"):
        mup.param_groups(model, "adamw", LR, parametrization="ntk")
