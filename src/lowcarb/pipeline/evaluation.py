"""The evaluation every model of a run gets: quality on dev/test and its serving costs.

`evaluate_model(ctx, ...)` hands the work to the run's task (lowcarb.pipeline.tasks):
`evaluate_classifier` here for sequence classification (serving measured by
lowcarb.train.costs.serving_costs, the same code the benchmarks use), and
`lm_evaluation.evaluate_causal_lm` for causal language models.
"""

from __future__ import annotations

from typing import Any

from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.tasks import EvalSplit, EvaluationSettings
from lowcarb.train.batches import model_device
from lowcarb.train.costs import serving_costs
from lowcarb.train.device import device_name, precision_on
from lowcarb.train.evaluate import evaluate
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
    splits: tuple[EvalSplit, ...] = ("dev", "test"),
    threads: int = 1,
    inferences: int = 1000,
    latency_batch_sizes: tuple[int, ...] = (1, SERVING_BATCH),
    latency_repeats: int | None = None,
    **lm_settings: Any,
) -> dict[str, Any]:
    """Flat metrics of the current model, from the run's task (the report's columns).

    `lm_settings` are the causal-LM fields of EvaluationSettings (generation_batch_sizes, ...).
    """
    settings = EvaluationSettings(
        splits=splits,
        threads=threads,
        inferences=inferences,
        latency_batch_sizes=latency_batch_sizes,
        latency_repeats=latency_repeats,
        **lm_settings,
    )
    return ctx.task.evaluate(ctx, settings)


def evaluate_classifier(ctx: RunContext, settings: EvaluationSettings) -> dict[str, Any]:
    """Flat metrics of a classifier (the report's columns; see lowcarb.report.summary).

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
    splits, threads, inferences = settings.splits, settings.threads, settings.inferences
    latency_batch_sizes, latency_repeats = settings.latency_batch_sizes, settings.latency_repeats
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
    latency_batches = {
        size: serving_batch if size == SERVING_BATCH else _first_batch(ctx, serving_split, size)
        for size in latency_batch_sizes
    }
    costs = serving_costs(
        model, serving_batch, latency_batches, threads, repeats=latency_repeats, repeat=repeat,
        n_inferences=inferences, carbon_config=ctx.carbon, precision=precision,
    )  # fmt: skip
    # The run record keeps the per-1,000 figures; the window itself is in the ledger already.
    for key in ("inference_footprint", "inference_energy_j", "inference_operational_g",
                "inference_embodied_g"):
        costs.pop(key)
    out.update(costs)
    out["device"] = str(device)
    out["device_name"] = ctx.placement.name if device == ctx.placement.device else device_name(device)
    out["precision"] = precision
    return out
