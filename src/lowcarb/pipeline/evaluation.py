"""The evaluation every model of a run gets: quality on dev/test and its serving costs."""

from __future__ import annotations

from typing import Any

from lowcarb.pipeline.context import RunContext
from lowcarb.train.batches import model_device
from lowcarb.train.device import device_name, precision_on
from lowcarb.train.evaluate import evaluate
from lowcarb.train.flops import flops_per_example
from lowcarb.train.footprint import inference_footprint
from lowcarb.train.latency import benchmark_latency
from lowcarb.train.size import count_parameters, size_on_disk_bytes
from lowcarb.train.timing import RepeatConfig

# Inferences for the footprint are served in batches of this size (throughput serving).
SERVING_BATCH = 32


def _first_batch(ctx: RunContext, split: str, size: int) -> Any:
    try:
        return next(iter(ctx.loader(split, batch_size=size)))
    except StopIteration:
        raise ValueError(f"the {split} split is empty; the model cannot be evaluated") from None


def evaluate_model(
    ctx: RunContext,
    *,
    splits: tuple[str, ...] = ("dev", "test"),
    threads: int = 1,
    inferences: int = 1000,
    latency_batch_sizes: tuple[int, ...] = (1, SERVING_BATCH),
    latency_repeats: int | None = None,
) -> dict[str, Any]:
    """Flat metrics of the current model (the report's columns; see lowcarb.report.summary).

    Quality: `<split>_accuracy`, `<split>_macro_f1`, `<split>_loss` for every split present.
    Serving: params, size_bytes, flops_per_example, latency_b<N>_p50_ms / _p95_ms for each
    batch size N in `latency_batch_sizes` at `threads` threads, with the median's interval
    (latency_b<N>_p50_low_ms / _high_ms) and repeats (the recipe's `evaluation.latency_budget_s`
    and `latency_rel_ci` decide how many, unless `latency_repeats` fixes the count),
    and the measured footprint of `inferences` inferences (served in batches of 32) scaled to
    1,000 inferences: per1k_energy_j, per1k_operational_g, per1k_embodied_g, per1k_total_g.
    Every figure names where it was measured: `device`, `device_name`, `precision`, and the
    machine's load while timing (`latency_load_1m`, `latency_cores`, `latency_busy`).
    """
    model = ctx.model
    batch_size = ctx.recipe.train.batch_size
    device = model_device(model)
    # A model that left the run's device (int8 served on the CPU) runs there in fp32.
    precision = precision_on(device, ctx.placement)
    section = ctx.recipe.evaluation
    repeat = None if latency_repeats is not None else RepeatConfig(
        budget_s=section.latency_budget_s, rel_ci=section.latency_rel_ci
    )
    out: dict[str, Any] = {}
    for split in splits:
        if split == "test" and ctx.data.test is None:
            continue
        result = evaluate(
            model,
            ctx.loader(split, batch_size=batch_size),
            quiet=ctx.quiet,
            description=f"evaluate {split}",
            precision=precision,
        )
        for key, value in result.items():
            out[f"{split}_{key}"] = value

    serving_split = "test" if ctx.data.test is not None else "dev"
    serving_batch = _first_batch(ctx, serving_split, SERVING_BATCH)
    out["params"] = count_parameters(model)
    out["trainable_params"] = count_parameters(model, trainable_only=True)
    out["size_bytes"] = size_on_disk_bytes(model)
    out["flops_per_example"] = flops_per_example(model, serving_batch)
    out["threads"] = threads
    out["device"] = str(device)
    out["device_name"] = ctx.placement.name if device == ctx.placement.device else device_name(device)
    out["precision"] = precision
    busiest: dict[str, Any] = {}
    for size in latency_batch_sizes:
        batch = serving_batch if size == SERVING_BATCH else _first_batch(ctx, serving_split, size)
        lat = benchmark_latency(
            model, batch, threads=threads, repeats=latency_repeats, config=repeat, precision=precision
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
    fp = inference_footprint(
        model,
        serving_batch,
        inferences,
        threads,
        name="inference",
        carbon_config=ctx.carbon,
        precision=precision,
    ).to_dict()
    # Whole batches run, so the window may serve a few more than asked: scale by what it served.
    served = float(fp.get("units") or inferences)
    scale = 1000.0 / served
    out["per1k_energy_j"] = fp["energy_j"] * scale
    out["per1k_operational_g"] = fp["operational_g"] * scale
    out["per1k_embodied_g"] = fp["embodied_g"] * scale
    out["per1k_total_g"] = out["per1k_operational_g"] + out["per1k_embodied_g"]
    out["per1k_method"] = "; ".join(
        f"{name}: {comp['method']}" for name, comp in (fp.get("components") or {}).items()
    )
    out["inferences_measured"] = served
    return out
