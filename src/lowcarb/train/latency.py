"""Inference latency at a fixed thread count (p50/p95 over repeated forward passes)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from lowcarb.train.batches import Batch, batch_size_of, model_device, model_inputs, to_device


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
    repeats: int = 20,
) -> dict[str, Any]:
    """Wall time of one forward pass on `example_batch` (labels ignored), in milliseconds."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    was_training = model.training
    model.eval()
    inputs = model_inputs(to_device(example_batch, model_device(model)))
    times_ms: list[float] = []
    try:
        with torch_threads(threads):
            for i in range(warmup + repeats):
                t0 = time.perf_counter()
                model(**inputs)
                elapsed = (time.perf_counter() - t0) * 1000.0
                if i >= warmup:
                    times_ms.append(elapsed)
    finally:
        model.train(was_training)
    arr = np.asarray(times_ms)
    return {
        "batch_size": batch_size_of(example_batch),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "repeats": repeats,
        "p50_ms": float(np.percentile(arr, 50)),
        "p95_ms": float(np.percentile(arr, 95)),
        "mean_ms": float(arr.mean()),
    }
