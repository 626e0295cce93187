"""The measured footprint of serving: 1,000 inferences inside a ledger window.

The device is synchronized before the window opens (work queued earlier is not charged to it)
and before it closes (the window's clock and energy reads see every inference done).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lowcarb.train.batches import Batch, batch_size_of, model_device, model_inputs, to_device
from lowcarb.train.device import autocast, synchronize
from lowcarb.train.latency import torch_threads


def inference_footprint(
    model: nn.Module,
    example_batch: Batch,
    n_inferences: int = 1000,
    threads: int | None = 1,
    *,
    name: str = "inference",
    carbon_config: Any | None = None,
    on_close: Callable[[Any], None] | None = None,
    precision: str = "fp32",
) -> Any:
    """Run forward passes on `example_batch` until `n_inferences` examples are served, inside
    `lowcarb.measure.track(name, unit="inference")`; returns the window's `Footprint`.

    The batch size of `example_batch` is the serving batch size (1 for latency-bound serving,
    32 for throughput); whole batches run, so `fp.units` may exceed `n_inferences` slightly.
    The inferences run where the model is, under `precision`'s autocast.
    """
    from lowcarb.measure import track  # imported here: train must not need the ledger to load

    if n_inferences < 1:
        raise ValueError(f"n_inferences must be >= 1, got {n_inferences}")
    size = batch_size_of(example_batch)
    n_batches = math.ceil(n_inferences / size)
    device = model_device(model)
    inputs = model_inputs(to_device(example_batch, device))
    kwargs: dict[str, Any] = {"unit": "inference", "units": n_batches * size}
    if carbon_config is not None:
        kwargs["config"] = carbon_config
    if on_close is not None:
        kwargs["on_close"] = on_close
    was_training = model.training
    model.eval()
    try:
        with torch_threads(threads), torch.inference_mode(), autocast(device, precision):
            synchronize(device)
            with track(name, **kwargs) as fp:
                for _ in range(n_batches):
                    model(**inputs)
                synchronize(device)
    finally:
        model.train(was_training)
    return fp
