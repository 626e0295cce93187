"""`model_costs`: the serving-cost figures every evaluation records, in one call."""

from __future__ import annotations

from typing import Any

from torch import nn

from lowcarb.train.batches import Batch
from lowcarb.train.flops import flops_per_example
from lowcarb.train.footprint import inference_footprint
from lowcarb.train.latency import benchmark_latency
from lowcarb.train.size import count_parameters, size_on_disk_bytes


def model_costs(
    model: nn.Module,
    batch_1: Batch,
    batch_32: Batch,
    threads: int = 1,
    *,
    repeats: int = 20,
    n_inferences: int | None = 1000,
    carbon_config: Any | None = None,
) -> dict[str, Any]:
    """Parameters, size on disk, FLOPs per example, latency p50/p95 at batch 1 and 32, and (unless
    `n_inferences` is None) the footprint of serving `n_inferences` examples in batches of 32.

    All timings use `threads` intra-op threads, recorded in the result.
    """
    out: dict[str, Any] = {
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
        "size_bytes": size_on_disk_bytes(model),
        "flops_per_example": flops_per_example(model, batch_32),
        "threads": threads,
    }
    for label, batch in (("b1", batch_1), ("b32", batch_32)):
        lat = benchmark_latency(model, batch, threads=threads, repeats=repeats)
        out[f"latency_{label}_p50_ms"] = lat["p50_ms"]
        out[f"latency_{label}_p95_ms"] = lat["p95_ms"]
        out[f"latency_{label}_batch_size"] = lat["batch_size"]
    if n_inferences is not None:
        fp = inference_footprint(
            model, batch_32, n_inferences, threads, name=f"inference x{n_inferences}", carbon_config=carbon_config
        )
        out["inference_footprint"] = fp.to_dict()
        out["inference_energy_j"] = fp.energy_j
        out["inference_operational_g"] = fp.operational_g
        out["inference_embodied_g"] = fp.embodied_g
    return out
