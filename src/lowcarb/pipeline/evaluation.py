"""The evaluation every model of a run gets: quality on dev/test and its serving costs."""

from __future__ import annotations

from typing import Any

from lowcarb.pipeline.context import RunContext
from lowcarb.train.costs import model_costs
from lowcarb.train.evaluate import evaluate


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
    latency_repeats: int = 20,
) -> dict[str, Any]:
    """Flat metrics of the current model (the report's columns; see lowcarb.report.summary).

    Quality: `<split>_accuracy`, `<split>_macro_f1`, `<split>_loss` for every split present.
    Serving: params, size_bytes, flops_per_example, latency_b1/b32 p50/p95 at `threads` threads,
    and the measured footprint of `inferences` inferences (served in batches of 32) scaled to
    1,000 inferences: per1k_energy_j, per1k_operational_g, per1k_embodied_g, per1k_total_g.
    """
    model = ctx.model
    batch_size = ctx.recipe.train.batch_size
    out: dict[str, Any] = {}
    for split in splits:
        if split == "test" and ctx.data.test is None:
            continue
        result = evaluate(
            model,
            ctx.loader(split, batch_size=batch_size),
            quiet=ctx.quiet,
            description=f"evaluate {split}",
        )
        for key, value in result.items():
            out[f"{split}_{key}"] = value

    serving_split = "test" if ctx.data.test is not None else "dev"
    costs = model_costs(
        model,
        _first_batch(ctx, serving_split, 1),
        _first_batch(ctx, serving_split, 32),
        threads=threads,
        repeats=latency_repeats,
        n_inferences=inferences,
        carbon_config=ctx.carbon,
    )
    fp = costs.pop("inference_footprint")
    for key in ("inference_energy_j", "inference_operational_g", "inference_embodied_g"):
        costs.pop(key, None)
    out.update(costs)
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
