"""SmoothQuant (Xiao et al., ICML 2023): migrate activation outliers into the weights.

Dynamic int8 quantizes each activation tensor with one scale, so a few input channels with large
values (BERT's LayerNorm outputs have them) leave little resolution for the rest. Smoothing divides
input channel j by s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha) (maxima over calibration batches)
and multiplies weight column j by s_j: the same product in exact arithmetic, with the outliers moved
into the weights, which are quantized per channel. BERT is post-LayerNorm (the LayerNorm output also
feeds the residual), so s cannot be folded into the LayerNorm: each smoothed Linear divides its
input itself (``SmoothedLinear``), one elementwise op beside an int8 matmul.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lowcarb.compress.quantize.calibrate import observe_inputs
from lowcarb.models.surgery import set_module

__all__ = ["SmoothedLinear", "activation_absmax", "smooth", "smoothed_structure", "smoothing_scales"]


class SmoothedLinear(nn.Module):
    """``linear(x / input_scale)``, where ``linear``'s weight columns were multiplied by
    ``input_scale``: the dense layer's function, with its input's outlier channels scaled down
    before the (int8) ``linear`` quantizes them."""

    input_scale: Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        # Shape readers (bert_structure.describe, size and FLOPs accounting) see a Linear's shape.
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.register_buffer("input_scale", torch.ones(linear.in_features))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x / self.input_scale.to(x.dtype))


def activation_absmax(
    model: nn.Module, names: list[str], calibration: Iterable[Any], max_batches: int
) -> dict[str, Tensor]:
    """Per input channel, the largest |input| each named module saw over the calibration batches."""
    return observe_inputs(
        model, names, calibration, max_batches,
        observe=lambda x: x.abs().flatten(0, -2).amax(0).float(), combine=torch.maximum,
    )  # fmt: skip


def smoothing_scales(amax: Tensor, weight: Tensor, alpha: float) -> Tensor:
    """s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha), with channels that never fired left at 1."""
    w = weight.detach().abs().amax(0).float()
    s = amax.clamp_min(1e-5) ** alpha / w.clamp_min(1e-5) ** (1.0 - alpha)
    return torch.where(amax > 0, s, torch.ones_like(s)).clamp_min(1e-5)


def smooth(
    model: nn.Module, names: list[str], alpha: float, calibration: Iterable[Any], batches: int
) -> list[str]:
    """Wrap each named Linear in a SmoothedLinear; returns the names of the inner Linears."""
    amax = activation_absmax(model, names, calibration, batches)
    with torch.no_grad():
        for name in names:
            linear = model.get_submodule(name)
            assert isinstance(linear, nn.Linear)
            scale = smoothing_scales(amax[name], linear.weight, alpha)
            # A new Parameter, not an in-place multiply: a weight tied elsewhere stays as it was.
            linear.weight = nn.Parameter(
                linear.weight * scale.to(linear.weight.dtype), requires_grad=False
            )
            wrapped = SmoothedLinear(linear)
            wrapped.input_scale.copy_(scale)
            set_module(model, name, wrapped)
    return [f"{n}.linear" for n in names]


def smoothed_structure(model: nn.Module, names: list[str]) -> list[str]:
    """The SmoothedLinear wrappers without statistics (scales of 1, loaded from a file after)."""
    for name in names:
        linear = model.get_submodule(name)
        assert isinstance(linear, nn.Linear)
        set_module(model, name, SmoothedLinear(linear))
    return [f"{n}.linear" for n in names]
