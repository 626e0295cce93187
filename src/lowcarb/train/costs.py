"""Serving costs: the figures every evaluation records (the run report's and the benchmarks'
alike come from ``serving_costs``), in one call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from lowcarb.train.batches import Batch
from lowcarb.train.flops import flops_per_example
from lowcarb.train.footprint import inference_footprint
from lowcarb.train.latency import benchmark_latency
from lowcarb.train.size import count_parameters, size_on_disk_bytes
from lowcarb.train.timing import RepeatConfig

__all__ = ["model_costs", "serving_costs"]


def serving_costs(
    model: nn.Module,
    serving_batch: Batch,
    latency_batches: Mapping[int, Batch],
    threads: int = 1,
    *,
    repeats: int | None = 20,
    repeat: RepeatConfig | None = None,
    n_inferences: int | None = 1000,
    carbon_config: Any | None = None,
    window_name: str = "inference",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Parameters, size on disk, FLOPs per example (on ``serving_batch``), latency for each batch
    of ``latency_batches`` (keyed by its nominal size N: ``latency_bN_p50_ms``, ``_p50_low_ms`` /
    ``_p50_high_ms`` (the median's interval), ``_p95_ms``, ``_repeats``, ``_batch_size``) with the
    machine's load while timing (``latency_load_1m``, ``latency_cores``, ``latency_busy``: the
    busiest batch size's), and, unless ``n_inferences`` is None, the footprint of serving that many
    examples in batches of ``serving_batch``: ``inference_*`` for the window, ``per1k_*`` per 1,000.

    ``repeats`` fixes the number of timed runs; ``repeats=None`` repeats until ``repeat`` (a
    RepeatConfig) is satisfied. All timings use ``threads`` intra-op threads, recorded in the result.
    """
    out: dict[str, Any] = {
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
        "size_bytes": size_on_disk_bytes(model),
        "flops_per_example": flops_per_example(model, serving_batch),
        "threads": threads,
    }
    out.update(_latencies(model, latency_batches, threads, repeats, repeat, precision))
    if n_inferences is not None:
        out.update(_footprint(model, serving_batch, n_inferences, threads, window_name,
                              carbon_config, precision))
    return out


def _latencies(
    model: nn.Module,
    batches: Mapping[int, Batch],
    threads: int,
    repeats: int | None,
    repeat: RepeatConfig | None,
    precision: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    busiest: dict[str, Any] = {}
    for size, batch in batches.items():
        lat = benchmark_latency(
            model, batch, threads=threads, repeats=repeats, config=repeat, precision=precision
        )
        for key in ("p50_ms", "p50_low_ms", "p50_high_ms", "p95_ms", "repeats"):
            out[f"latency_b{size}_{key}"] = lat[key]
        # A split smaller than the batch size gives a smaller batch: record what was timed.
        out[f"latency_b{size}_batch_size"] = lat["batch_size"]
        if not busiest or (lat["load_1m"] or 0.0) > (busiest["load_1m"] or 0.0):
            busiest = lat
    if busiest:
        out["latency_load_1m"] = busiest["load_1m"]
        out["latency_cores"] = busiest["cores"]
        out["latency_busy"] = busiest["busy"]
    return out


def _footprint(
    model: nn.Module, batch: Batch, n: int, threads: int, name: str, carbon: Any, precision: str
) -> dict[str, Any]:
    fp = inference_footprint(
        model, batch, n, threads, name=name, carbon_config=carbon, precision=precision
    ).to_dict()
    # Whole batches run, so the window may serve a few more than asked: scale by what it served.
    served = float(fp.get("units") or n)
    scale = 1000.0 / served
    per1k_operational, per1k_embodied = fp["operational_g"] * scale, fp["embodied_g"] * scale
    return {
        "inference_footprint": fp,
        "inference_energy_j": fp["energy_j"],
        "inference_operational_g": fp["operational_g"],
        "inference_embodied_g": fp["embodied_g"],
        "inferences_measured": served,
        "per1k_energy_j": fp["energy_j"] * scale,
        "per1k_operational_g": per1k_operational,
        "per1k_embodied_g": per1k_embodied,
        "per1k_total_g": per1k_operational + per1k_embodied,
        "per1k_method": "; ".join(
            f"{comp}: {c['method']}" for comp, c in (fp.get("components") or {}).items()
        ),
    }


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
    """``serving_costs`` at batch 1 and 32, serving in batches of 32 (the benchmarks' call)."""
    return serving_costs(
        model, batch_32, {1: batch_1, 32: batch_32}, threads, repeats=repeats,
        n_inferences=n_inferences, carbon_config=carbon_config,
        window_name=f"inference x{n_inferences}",
    )  # fmt: skip
