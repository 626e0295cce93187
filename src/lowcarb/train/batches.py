"""Batches and model outputs: the conventions every loop in lowcarb shares."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from lowcarb.models.surgery import without_labels

Batch = dict[str, torch.Tensor]


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor of a model output (a tensor, or a Hugging Face output with `.logits`)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"cannot find logits in a model output of type {type(output).__name__}; "
        "return a tensor or an object with .logits"
    )


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model with neither.
    Loops, latency and energy timing read the device here: the runner placed the model."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def to_device(batch: Batch, device: torch.device, *, non_blocking: bool = True) -> Batch:
    """The batch's tensors on `device`. The copy is asynchronous when the loader pinned the
    host memory (a GPU run); the next kernel on the device waits for it, so this is safe."""
    return {
        k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """A detached copy in host memory, to read values from. On a GPU this waits for the work
    that produces the tensor, so loops call it rarely (once per evaluation, every few steps)."""
    return tensor.detach().cpu()


def model_inputs(batch: Batch) -> Batch:
    """Every key except "labels" is a keyword argument of the model (models.surgery's rule)."""
    return without_labels(batch)


def forward(model: nn.Module, batch: Batch) -> torch.Tensor:
    return logits_of(model(**model_inputs(batch)))


def batch_size_of(batch: Batch) -> int:
    if "labels" in batch:
        return int(batch["labels"].shape[0])
    return int(next(iter(model_inputs(batch).values())).shape[0])


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
