"""Low-rank factorization: exactness at full rank, budgets, Frobenius decay, conv, save/reload."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowcarb.compress import lowrank
from lowcarb.compress.lowrank import (
    FactorizedConv2d,
    FactorizedLinear,
    LowRankConfig,
    frobenius_decay,
    frobenius_decay_loss,
    param_groups,
)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
    )


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 24, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2))
        self.head = nn.Linear(24 * 4 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.head(x.flatten(1))


def test_full_rank_linear_reproduces_dense():
    torch.manual_seed(0)
    dense = nn.Linear(20, 12)
    fact = FactorizedLinear.from_dense(dense, rank=12)
    x = torch.randn(7, 20)
    torch.testing.assert_close(fact(x), dense(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fact.dense_weight(), dense.weight, rtol=1e-5, atol=1e-6)


def test_spectral_init_is_balanced_truncated_svd():
    torch.manual_seed(1)
    dense = nn.Linear(30, 20, bias=False)
    fact = FactorizedLinear.from_dense(dense, rank=5)
    u, v = fact.factors()
    # balanced: U^T U == V V^T == S_r (diagonal)
    torch.testing.assert_close(u.T @ u, v @ v.T, rtol=1e-4, atol=1e-5)
    s = torch.linalg.svdvals(dense.weight.detach())
    torch.testing.assert_close(torch.diagonal(u.T @ u), s[:5], rtol=1e-4, atol=1e-5)
    # Eckart-Young: the residual norm is the tail of the spectrum
    err = torch.linalg.matrix_norm(fact.dense_weight() - dense.weight)
    torch.testing.assert_close(err, s[5:].pow(2).sum().sqrt(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 8, kernel_size=3, padding=1),
        nn.Conv2d(4, 6, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
        nn.Conv2d(2, 5, kernel_size=3, stride=2, padding="valid", bias=False),
        nn.Conv2d(3, 4, kernel_size=3, padding="same", padding_mode="reflect"),
    ],
)
def test_conv2d_full_rank_shapes_and_outputs(conv):
    torch.manual_seed(2)
    o, c, kh, kw = conv.weight.shape
    full = min(o * kw, c * kh)
    fact = FactorizedConv2d.from_dense(conv, rank=full)
    assert fact.v.weight.shape == (full, c, kh, 1)
    assert fact.u.weight.shape == (o, full, 1, kw)
    x = torch.randn(2, c, 11, 13)
    torch.testing.assert_close(fact(x), conv(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fact.dense_weight(), conv.weight, rtol=1e-4, atol=1e-6)


def test_conv2d_truncated_rank_is_the_truncated_matrix():
    torch.manual_seed(3)
    conv = nn.Conv2d(8, 16, kernel_size=3, padding=1)
    fact = FactorizedConv2d.from_dense(conv, rank=4)
    u, v = fact.factors()
    assert u.shape == (16 * 3, 4) and v.shape == (4, 8 * 3)
    # the truncated conv equals a dense conv with the rank-4 kernel
    ref = nn.Conv2d(8, 16, kernel_size=3, padding=1)
    with torch.no_grad():
        ref.weight.copy_(fact.dense_weight())
        ref.bias.copy_(conv.bias)
    x = torch.randn(2, 8, 9, 9)
    torch.testing.assert_close(fact(x), ref(x), rtol=1e-4, atol=1e-5)


def test_budget_ranks_meet_the_budget_and_save_parameters():
    model = _mlp()
    before = sum(m.weight.numel() for m in model if isinstance(m, nn.Linear))
    summary = lowrank.apply(model, LowRankConfig(param_ratio=0.5))
    assert summary["target_params_before"] == before
    assert summary["target_params_after"] <= 0.5 * before
    assert summary["target_params_after"] > 0.4 * before  # the budget is spent, not wasted
    for name, rank in summary["ranks"].items():
        mod = model.get_submodule(name)
        assert isinstance(mod, FactorizedLinear) and mod.rank == rank
        m, n = mod.out_features, mod.in_features
        assert rank < m * n / (m + n)
    assert summary.params_after < summary.params_before
    assert set(summary["energy_kept"]) == set(summary["ranks"])
    assert all(0 < e <= 1 for e in summary["energy_kept"].values())


def test_budget_prefers_layers_with_concentrated_spectra():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(64, 64, bias=False), nn.Linear(64, 64, bias=False))
    with torch.no_grad():  # layer 0 is nearly rank 4, layer 1 has a flat spectrum
        a, b = torch.randn(64, 4), torch.randn(4, 64)
        model[0].weight.copy_(a @ b + 0.01 * torch.randn(64, 64))
        q, _ = torch.linalg.qr(torch.randn(64, 64))
        model[1].weight.copy_(q)
    summary = lowrank.apply(model, LowRankConfig(param_ratio=0.3))
    assert summary["ranks"]["0"] < summary["ranks"].get("1", 64)
    assert summary["energy_kept"]["0"] > 0.99


def test_energy_threshold_picks_the_smallest_rank_per_layer():
    torch.manual_seed(5)
    layer = nn.Linear(40, 40, bias=False)
    model = nn.Sequential(layer)
    s = torch.linalg.svdvals(layer.weight.detach().double())
    energy = (s.pow(2).cumsum(0) / s.pow(2).sum()).float()
    summary = lowrank.apply(model, LowRankConfig(param_ratio=None, energy=0.3))
    r = summary["ranks"]["0"]
    assert energy[r - 1] >= 0.3 - 1e-6 and (r == 1 or energy[r - 2] < 0.3)


def test_never_factorizes_where_it_would_not_save():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(64, 64))
    summary = lowrank.apply(model, LowRankConfig(param_ratio=None, rank=6))
    # 8 x 8: break-even rank 4, so rank 6 would cost more than the dense layer
    assert "0" in summary["skipped"] and "mn/(m+n)" in summary["skipped"]["0"]
    assert isinstance(model[0], nn.Linear)
    assert isinstance(model[1], FactorizedLinear) and model[1].rank == 6


def test_patterns_and_exclude_select_modules():
    model = _mlp()
    summary = lowrank.apply(
        model, LowRankConfig(param_ratio=None, rank=8, targets=("0", "2", "4"), exclude=("4",))
    )
    assert summary.modules_changed == ["0", "2"]
    assert isinstance(model[4], nn.Linear)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"param_ratio": 0.0}, "param_ratio must be in (0, 1]"),
        ({"param_ratio": 1.5}, "param_ratio must be in (0, 1]"),
        ({"param_ratio": None, "rank": 0}, "rank must be a positive integer"),
        ({"param_ratio": None, "energy": 0.0}, "energy must be in (0, 1]"),
        ({"param_ratio": 0.5, "rank": 4}, "exactly one of"),
        ({"param_ratio": None}, "exactly one of"),
        ({"targets": "encoder"}, "tuples of patterns"),
    ],
)
def test_bad_configs_give_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        LowRankConfig(**kwargs)


def test_pattern_matching_nothing_lists_the_modules():
    model = _mlp()
    with pytest.raises(
        ValueError, match=r"matches no Linear/Conv2d module; candidates are: 0, 2, 4"
    ):
        lowrank.apply(model, LowRankConfig(targets=("*attention*",)))


def test_tiny_budget_is_refused():
    with pytest.raises(ValueError, match="raise param_ratio"):
        lowrank.apply(_mlp(), LowRankConfig(param_ratio=0.001))


def test_frobenius_decay_matches_autograd_of_the_product_norm():
    model = _mlp()
    lowrank.apply(model, LowRankConfig(param_ratio=None, rank=5))
    coeff = 0.3
    penalty = frobenius_decay(model, coeff)
    grads = torch.autograd.grad(penalty, [p for p in model.parameters()], allow_unused=True)

    direct = sum(
        0.5 * coeff * (m.u.weight @ m.v.weight).pow(2).sum()
        for m in lowrank.factorized_modules(model).values()
    )
    ref = torch.autograd.grad(direct, [p for p in model.parameters()], allow_unused=True)
    torch.testing.assert_close(penalty, direct, rtol=1e-5, atol=1e-6)
    for g, r in zip(grads, ref, strict=True):
        if r is None:
            assert g is None
        else:
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
    # analytic gradient for one U: coeff * (U V) V^T
    m = model[0]
    gu = grads[[id(p) for p in model.parameters()].index(id(m.u.weight))]
    torch.testing.assert_close(
        gu, coeff * (m.u.weight @ m.v.weight) @ m.v.weight.T, rtol=1e-5, atol=1e-6
    )


def test_frobenius_decay_on_conv_uses_the_matrix_product():
    net = _ConvNet()
    lowrank.apply(net, LowRankConfig(param_ratio=None, rank=3, targets=("conv*",)))
    penalty = frobenius_decay_loss(2.0)(net)
    direct = sum(m.dense_weight().pow(2).sum() for m in lowrank.factorized_modules(net).values())
    torch.testing.assert_close(penalty, direct, rtol=1e-5, atol=1e-5)


def test_frobenius_decay_errors():
    with pytest.raises(ValueError, match="no factorized layers"):
        frobenius_decay(_mlp(), 1e-4)
    with pytest.raises(ValueError, match=">= 0"):
        frobenius_decay_loss(-1.0)


def test_param_groups_exclude_factors_from_weight_decay():
    model = _mlp()
    lowrank.apply(model, LowRankConfig(param_ratio=None, rank=5, targets=("0", "2")))
    groups = {g["name"]: g for g in param_groups(model, weight_decay=0.01)}
    factor_ids = {id(p) for g in [groups["lowrank_factors"]] for p in g["params"]}
    assert groups["lowrank_factors"]["weight_decay"] == 0.0
    assert factor_ids == {id(model[i].u.weight) for i in (0, 2)} | {
        id(model[i].v.weight) for i in (0, 2)
    }
    assert groups["decayed"]["weight_decay"] == 0.01
    assert [id(p) for p in groups["decayed"]["params"]] == [id(model[4].weight)]
    assert all(p.ndim == 1 for p in groups["no_decay"]["params"])
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len(list(model.parameters()))
    torch.optim.AdamW(param_groups(model, 0.01))  # accepted by the optimiser


def test_recovery_step_with_frobenius_decay_trains():
    model = _mlp()
    lowrank.apply(model, LowRankConfig(param_ratio=0.5))
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-2)
    torch.manual_seed(0)
    x, y = torch.randn(64, 48), torch.randint(0, 10, (64,))
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(model(x), y) + frobenius_decay(model, 1e-4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_save_and_reload_gives_identical_outputs(tmp_path):
    net = _ConvNet()
    lowrank.apply(net, LowRankConfig(param_ratio=0.5))
    lowrank.save(net, tmp_path / "lr")
    fresh = _ConvNet()  # different random weights, same architecture
    lowrank.load(fresh, tmp_path / "lr")
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(net(x), fresh(x))
    assert {n: m.rank for n, m in lowrank.factorized_modules(fresh).items()} == {
        n: m.rank for n, m in lowrank.factorized_modules(net).items()
    }


def test_load_from_a_folder_without_metadata_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_transformed"):
        lowrank.load(_mlp(), tmp_path)


def test_applying_twice_does_not_refactorize_factors():
    model = _mlp()
    lowrank.apply(model, LowRankConfig(param_ratio=None, rank=8, targets=("0",)))
    summary = lowrank.apply(model, LowRankConfig(param_ratio=None, rank=4))
    assert "0.u" not in summary["ranks"] and "0.v" not in summary["ranks"]


def test_progress_is_shown_only_when_asked(capsys):
    lowrank.apply(_mlp(), LowRankConfig(param_ratio=0.5))
    assert capsys.readouterr().out == ""  # the library default is quiet
    summary = lowrank.apply(_mlp(), LowRankConfig(param_ratio=0.5), quiet=False)
    out = capsys.readouterr().out  # not a terminal: plain lines, one per phase at the end
    assert "lowrank: spectra: done, 3/3 steps" in out
    assert f"lowrank: factorize: done, {len(summary['ranks'])}/{len(summary['ranks'])} steps" in out
