"""Parameter count and size on disk (the model serialised to a temporary safetensors file).

The parameter-counting rule is lowcarb.models.surgery.count_parameters (one rule for the whole
project); the file holds what lowcarb.models.state writes for any model, quantized or not.
"""

from __future__ import annotations

import os
import tempfile

import torch
from safetensors.torch import save_file
from torch import nn

from lowcarb.models.state import encode_state
from lowcarb.models.surgery import count_parameters, quantized_weights

__all__ = ["count_parameters", "quantized_weights", "size_on_disk_bytes", "state_tensors"]


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state as plain tensors (int8 payloads, scales, zero points as they are stored),
    tensors that share storage (tied weights) kept once."""
    tensors, _, _ = encode_state(model)
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    state = model.state_dict(keep_vars=True)
    for key, tensor in tensors.items():
        # Tied weights are one storage under two keys of the state dict: store them once.
        source = state.get(key)
        if isinstance(source, torch.Tensor) and not source.is_quantized and type(source.data) is torch.Tensor:
            ident = (source.untyped_storage().data_ptr(), int(source.storage_offset()), tuple(source.shape))
            if ident in seen:
                continue
            seen.add(ident)
        out[key] = tensor
    return out


def size_on_disk_bytes(model: nn.Module) -> int:
    """Bytes of the safetensors file holding the model's state."""
    with tempfile.TemporaryDirectory(prefix="lowcarb-size-") as tmp:
        path = os.path.join(tmp, "model.safetensors")
        save_file(state_tensors(model), path)
        return os.path.getsize(path)
