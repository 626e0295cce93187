"""Parameter count and size on disk (the model serialised to a temporary safetensors file)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

# Where torch.ao's int8 modules live (plain, and fused such as ConvReLU2d / LinearReLU).
_QUANTIZED_MODULES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")


def quantized_weights(model: nn.Module) -> Iterator[tuple[nn.Module, torch.Tensor]]:
    """(module, int8 weight) for every quantized module (torch.ao keeps these out of parameters())."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if callable(weight) and type(module).__module__.startswith(_QUANTIZED_MODULES):
            yield module, weight()


# lowcarb's own int8 modules keep their int8 values in buffers: Int8WeightOnlyLinear.weight_int8
# (compress.quantize) and CompactEmbedding.rows_int8 (compress.distill.vocab).
_INT8_BUFFERS = ("weight_int8", "rows_int8")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Distinct parameters (tied weights counted once), int8 weights of quantized modules included."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    if not trainable_only:  # quantized weights are frozen by construction
        for module, weight in quantized_weights(model):
            bias = module.bias() if callable(getattr(module, "bias", None)) else None
            total += weight.numel() + (bias.numel() if bias is not None else 0)
        for module in model.modules():
            for name in _INT8_BUFFERS:
                buffer = module._buffers.get(name)
                if buffer is not None:
                    total += buffer.numel()
    return total


def _tensors(name: str, value: Any) -> Iterator[tuple[str, torch.Tensor]]:
    # Quantized modules keep int8 tensors (and packed tuples) in their state dict: store the
    # integer payload and the scales, which is what an int8 file actually holds.
    if isinstance(value, torch.Tensor):
        if value.is_quantized:
            yield f"{name}.int_repr", value.int_repr()
            if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                yield f"{name}.scales", value.q_per_channel_scales()
                yield f"{name}.zero_points", value.q_per_channel_zero_points()
            else:
                yield f"{name}.scale", torch.tensor([value.q_scale()])
                yield f"{name}.zero_point", torch.tensor([value.q_zero_point()])
        else:
            yield name, value
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from _tensors(f"{name}.{i}", item)


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state as plain tensors, shared storage deduplicated, ready for safetensors."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    for name, value in model.state_dict().items():
        for key, tensor in _tensors(name, value):
            t = tensor.detach().cpu()
            ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
            if ident in seen:  # tied weights are stored once
                continue
            seen.add(ident)
            out[key] = t.contiguous().clone() if not t.is_contiguous() else t.clone()
    return out


def size_on_disk_bytes(model: nn.Module) -> int:
    """Bytes of the safetensors file holding the model's state."""
    with tempfile.TemporaryDirectory(prefix="lowcarb-size-") as tmp:
        path = os.path.join(tmp, "model.safetensors")
        save_file(state_tensors(model), path)
        return os.path.getsize(path)
