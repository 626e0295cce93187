"""CNN channel pruning by BN scale: groups found by tracing, ratios, removal == masked model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lowcarb.models.cnn import DigitsCNN
from lowcarb.prune import bn_channels as bc


def digits_cnn() -> DigitsCNN:
    torch.manual_seed(0)
    model = DigitsCNN((1, 8, 8), 10, channels=(16, 32))
    with torch.no_grad():  # non-trivial BN statistics so eval-mode BN does real work
        for bn in bc.bn_layers(model).values():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(-1, 1)
    return model.eval()


def images() -> torch.Tensor:
    return torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))


def test_groups_follow_the_data_flow():
    groups = bc.channel_groups(digits_cnn())
    assert [(g.conv, g.bn, g.consumer, g.consumer_is_linear) for g in groups] == [
        ("features.0", "features.1", "features.3", False),
        ("features.3", "features.4", "classifier.1", True),
    ]


def test_masks_global_ratio_and_smallest_gammas():
    model = digits_cnn()
    mask = bc.masks(model, 0.5)["channels"]
    assert mask.shape == (48,)
    assert int((~mask).sum()) == 24
    gammas = torch.cat([bn.weight.detach().abs() for bn in bc.bn_layers(model).values()])
    assert gammas[~mask].max() <= gammas[mask].min()


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.7])
def test_physical_removal_equals_masked_model(ratio):
    model = digits_cnn()
    mask = bc.masks(model, ratio)
    masked = copy.deepcopy(model)
    bc.apply_masks(masked, mask)  # gamma = beta = 0: the channel outputs 0 after BN
    expected = masked(images())
    before = sum(p.numel() for p in model.parameters())
    changed = bc.prune(model, mask)
    assert set(changed) == {"features.0", "features.1", "features.3", "features.4",
                            "classifier.1"}
    assert torch.allclose(model(images()), expected, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) < before
    kept = int(mask["channels"].sum())
    assert model.features[0].out_channels + model.features[3].out_channels == kept
    assert model.classifier[1].in_features == model.features[3].out_channels * 16


def test_each_layer_keeps_a_channel():
    model = digits_cnn()
    with torch.no_grad():
        model.features[1].weight.fill_(1e-4)
    mask = bc.masks(model, 0.6)["channels"]
    assert mask[:16].sum() >= 1


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc((self.bn(self.conv(x)) + x).mean((2, 3)))


def test_residual_add_refused():
    with pytest.raises(ValueError, match="cannot follow"):
        bc.channel_groups(Residual())


def test_bn_without_affine_refused():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, affine=False), nn.ReLU(),
                          nn.Conv2d(4, 2, 3))
    with pytest.raises(ValueError, match="affine=False"):
        bc.channel_groups(model)


def test_wrong_mask_size_rejected():
    with pytest.raises(ValueError, match="48 BN channels"):
        bc.prune(digits_cnn(), {"channels": torch.ones(10, dtype=torch.bool)})
