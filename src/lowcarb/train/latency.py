"""Inference latency at a fixed thread count: the median of repeated forward passes, with its
confidence interval and the machine's load, on the device the model is on.

Every clock read synchronizes the device (lowcarb.train.timing), so a GPU's figure is the work,
not the time to queue it. By default the pass is repeated until the median's 95 % interval is
within +-3 % or 5 s are spent (`RepeatConfig`); `repeats=N` times exactly N passes instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from lowcarb.train.batches import Batch, batch_size_of, model_device, model_inputs, to_device
from lowcarb.train.device import autocast
from lowcarb.train.timing import RepeatConfig, time_repeats


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Pin torch's intra-op thread count for the block, then restore it."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.inference_mode()
def benchmark_latency(
    model: nn.Module,
    example_batch: Batch,
    threads: int | None = 1,
    *,
    warmup: int = 3,
    repeats: int | None = None,
    config: RepeatConfig | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Wall time of one forward pass on `example_batch` (labels ignored), in milliseconds.

    Keys: `p50_ms` (median), `p50_low_ms` / `p50_high_ms` (its 95 % interval), `p50_rel_ci`,
    `p95_ms`, `mean_ms`, `repeats`, `stop_reason`, `batch_size`, `threads`, `device`,
    `precision`, and the load while timing (`load_1m`, `cores`, `busy`).
    """
    if repeats is not None:
        if config is not None:
            raise ValueError("give repeats (a fixed count) or config (repeat until steady), not both")
        cfg = RepeatConfig.fixed(repeats, warmup)
    else:
        cfg = config or RepeatConfig(warmup=warmup)
    was_training = model.training
    model.eval()
    device = model_device(model)
    inputs = model_inputs(to_device(example_batch, device))

    def call() -> None:
        with autocast(device, precision):
            model(**inputs)

    try:
        with torch_threads(threads):
            timings = time_repeats(call, device, cfg)
    finally:
        model.train(was_training)
    return {
        "batch_size": batch_size_of(example_batch),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "device": timings.device,
        "precision": precision,
        "repeats": timings.repeats,
        "stop_reason": timings.stop_reason,
        "p50_ms": timings.p50_ms,
        "p50_low_ms": timings.p50_low_ms,
        "p50_high_ms": timings.p50_high_ms,
        "p50_rel_ci": timings.p50_rel_ci,
        "p95_ms": timings.p95_ms,
        "mean_ms": timings.mean_ms,
        **timings.load.to_dict(),
    }
