"""Init scales, forward multipliers, CompleteP, and muP == SP at the base width."""

from __future__ import annotations

import math

import pytest
import torch

from lowcarb.search import mup
from lowcarb.search.mup import MupModelConfig, build_model
from lowcarb.search.mup.coord_check import loss_of

BASE = 16


def _cfg(kind="lm", width=256, **kw) -> MupModelConfig:
    return MupModelConfig(kind=kind, width=width, base_width=BASE, vocab_size=13, max_len=8, **kw)


def test_init_scales_follow_the_rules():
    torch.manual_seed(0)
    for width in (64, 256):
        m = build_model(_cfg(width=width, init_std=0.5))
        blk = m.blocks[0]
        # matrix-like: std = init_std / sqrt(fan_in), whatever the width
        for w in (
            blk.attn.k.weight,
            blk.attn.v.weight,
            blk.attn.o.weight,
            blk.mlp.fc.weight,
            blk.mlp.proj.weight,
        ):
            expected = 0.5 / math.sqrt(w.shape[1])
            assert w.std().item() == pytest.approx(expected, rel=0.1)
        # vector-like input embeddings: width-independent std
        assert m.tok.weight.std().item() == pytest.approx(0.5, rel=0.2)
        assert m.pos.weight.std().item() == pytest.approx(0.5, rel=0.2)
        # muP: readout and query start at zero; biases zero; norm gains one
        assert torch.count_nonzero(m.readout.weight) == 0
        assert torch.count_nonzero(blk.attn.q.weight) == 0
        assert (
            torch.count_nonzero(blk.attn.q.bias) == 0 and torch.count_nonzero(blk.mlp.fc.bias) == 0
        )
        assert torch.all(blk.ln1.weight == 1)


def test_standard_init_has_no_zero_readout_or_query():
    torch.manual_seed(0)
    m = build_model(_cfg(parametrization="sp"))
    assert m.readout.weight.std().item() == pytest.approx(1 / math.sqrt(256), rel=0.1)
    assert m.blocks[0].attn.q.weight.std().item() == pytest.approx(1 / math.sqrt(256), rel=0.1)


def test_forward_multipliers():
    m = build_model(_cfg(width=64, output_mult=2.0))  # 4 heads: d_head 4 at base, 16 here
    assert m.readout.multiplier == pytest.approx(2.0 * BASE / 64)
    assert m.blocks[0].attn.scale == pytest.approx(math.sqrt(4) / 16)
    sp = build_model(_cfg(width=64, output_mult=2.0, parametrization="sp"))
    assert sp.readout.multiplier == pytest.approx(2.0)
    assert sp.blocks[0].attn.scale == pytest.approx(1 / 4)
    # Fixed head size: the number of heads grows and the scale stays 1/sqrt(d_head).
    fixed = build_model(_cfg(width=64, n_heads=None, d_head=8))
    assert fixed.blocks[0].attn.n_heads == 8
    assert fixed.blocks[0].attn.scale == pytest.approx(1 / math.sqrt(8))


def test_completep_scales_residual_branches_by_inverse_depth():
    m = build_model(_cfg(width=32, depth=4, base_depth=2, depth_scaling="completep"))
    assert all(b.branch_mult == pytest.approx(0.5) for b in m.blocks)
    assert build_model(_cfg(width=32, depth=4)).blocks[0].branch_mult == 1.0
    with pytest.raises(ValueError, match="residual"):
        _cfg(kind="mlp", depth_scaling="completep")


@pytest.mark.parametrize("kind", ["mlp", "lm", "encoder"])
def test_mup_equals_sp_at_the_base_width(kind):
    """Same weights at the base width: same outputs, same optimiser groups, same training."""
    torch.manual_seed(0)
    sp = build_model(_cfg(kind, width=BASE, parametrization="sp", d_in=6))
    mu = build_model(_cfg(kind, width=BASE, parametrization="mup", d_in=6))
    mu.load_state_dict(sp.state_dict())
    g = torch.Generator().manual_seed(1)
    if kind == "mlp":
        batch = {"x": torch.randn(4, 6, generator=g), "labels": torch.tensor([0, 1, 1, 0])}
    elif kind == "lm":
        ids = torch.randint(0, 13, (4, 8), generator=g)
        batch = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    else:
        batch = {
            "input_ids": torch.randint(0, 13, (4, 8), generator=g),
            "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3] * 2),
            "labels": torch.tensor([0, 1, 1, 0]),
        }
    opts = [mup.optimizer(m, "adamw", lr=1e-2, weight_decay=0.1) for m in (sp, mu)]
    assert [g["lr"] for g in opts[0].param_groups] == [g["lr"] for g in opts[1].param_groups]
    for _ in range(3):
        for m, opt in zip((sp, mu), opts, strict=True):
            opt.zero_grad()
            loss_of(m, batch).backward()
            opt.step()
    for (n, a), b in zip(sp.named_parameters(), mu.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=n)
    # Away from the base width the two differ (the check above is not vacuous).
    assert build_model(_cfg(kind, width=2 * BASE, d_in=6)).readout.multiplier == 0.5


def test_encoder_ignores_padding():
    torch.manual_seed(0)
    m = build_model(_cfg("encoder", width=32, parametrization="sp"))
    ids = torch.randint(1, 13, (1, 8))
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    other = ids.clone()
    other[0, 5:] = 0  # change only the padded positions
    torch.testing.assert_close(m(ids, mask), m(other, mask))


def test_config_errors_are_helpful():
    with pytest.raises(ValueError, match="divisible"):
        _cfg(width=18)
    with pytest.raises(ValueError, match="exactly one"):
        _cfg(n_heads=None)
    with pytest.raises(ValueError, match="unknown model kind"):
        _cfg(kind="cnn")
    with pytest.raises(ValueError, match="unknown model setting"):
        MupModelConfig.from_dict({"kind": "lm", "widht": 32})
    with pytest.raises(ValueError, match="max_len"):
        build_model(_cfg(width=16))(torch.zeros(1, 9, dtype=torch.long))


def test_param_groups_drive_lowcarb_train_fit():
    """The muP groups plug into the project's training loop and keep their own learning rates."""
    from lowcarb.train import TrainConfig, fit

    torch.manual_seed(0)
    model = build_model(_cfg("encoder", width=64))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 13, (32, 8), generator=g)
    labels = (ids[:, 0] > 6).long()
    batches = [{"input_ids": ids[i : i + 8], "labels": labels[i : i + 8]} for i in range(0, 32, 8)]
    groups = mup.param_groups(model, "adamw", lr=1e-2, weight_decay=0.0)
    q_before = model.blocks[0].attn.q.weight.detach().clone()
    fit(
        model,
        batches,
        None,
        TrainConfig(
            epochs=2, lr=1e-2, weight_decay=0.0, warmup_ratio=0.0, grad_clip_norm=None, quiet=True
        ),
        param_groups=groups,
    )
    assert {g["lr_mult"] for g in groups} == {1.0, BASE / 64}
    assert not torch.equal(model.blocks[0].attn.q.weight, q_before)  # the zero query learned


@pytest.mark.parametrize("kind", ["lm", "encoder"])
def test_fused_attention_equals_the_probed_path(kind):
    """Without hooks attention runs fused; with a hook on the logits it runs step by step."""
    torch.manual_seed(0)
    m = build_model(_cfg(kind, width=32, parametrization="sp"))
    ids = torch.randint(0, 13, (3, 8))
    kw = {} if kind == "lm" else {"attention_mask": torch.tensor([[1] * 8, [1] * 6 + [0] * 2] * 2)[:3]}
    fused = m(ids, **kw)
    seen = []
    handle = m.blocks[0].attn.logits.register_forward_hook(lambda *a: seen.append(1))
    m.blocks[1].attn.logits.register_forward_hook(lambda *a: None)
    probed = m(ids, **kw)
    handle.remove()
    assert seen == [1]
    torch.testing.assert_close(fused, probed, atol=1e-5, rtol=1e-5)
