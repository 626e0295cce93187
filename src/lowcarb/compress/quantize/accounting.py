"""Bytes of quantized weights and the error a quantization leaves (SQNR)."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from lowcarb.compress.quantize.compute_dtype import PackedInt8Linear
from lowcarb.models.state import is_subclass_tensor, subclass_parts

__all__ = ["linear_weight_bytes", "sqnr_db", "tensor_bytes"]


def tensor_bytes(t: Tensor) -> int:
    """Bytes a weight really holds: torchao subclasses their payload and scales, torch.ao int8
    tensors their values plus scales and zero points, plain tensors numel x element size."""
    if is_subclass_tensor(t):
        data, attrs = subclass_parts(t)
        return sum(tensor_bytes(getattr(data, a)) for a in attrs)
    if t.is_quantized:
        n = t.numel() * t.element_size()
        if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scales, zps = t.q_per_channel_scales(), t.q_per_channel_zero_points()
            return n + scales.numel() * scales.element_size() + zps.numel() * zps.element_size()
        return n + 8 + 8  # one float64 scale, one int64 zero point
    return t.numel() * t.element_size()


def _torch_ao_linear_types() -> tuple[type, ...]:
    try:
        from torch.ao.nn.quantized import Linear as QLinear
        from torch.ao.nn.quantized.dynamic import Linear as DQLinear
    except ImportError:  # torch without torch.ao: no such modules can be in the model either
        return ()
    return (DQLinear, QLinear)


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights of every Linear (fp32, torch.ao int8, torchao int8/int4), scales and
    zero points included, biases excluded."""
    ao_linears = _torch_ao_linear_types()
    total = 0
    for mod in model.modules():
        if isinstance(mod, PackedInt8Linear):
            total += tensor_bytes(mod.weight_int8) + tensor_bytes(mod.scales)
        elif ao_linears and isinstance(mod, ao_linears):
            total += tensor_bytes(cast(Any, mod).weight())  # packed: weight() unpacks it
        elif isinstance(mod, nn.Linear):
            total += tensor_bytes(mod.weight)
    return total


def sqnr_db(reference: Tensor, approx: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(||ref||^2 / ||ref - approx||^2)."""
    ref = reference.detach().double()
    noise = (ref - approx.detach().double()).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref.pow(2).sum() / noise))
