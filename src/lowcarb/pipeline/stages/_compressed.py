"""How the lowrank and quantize stages tell the runner to save and rebuild the model they changed.

The runner saves the final model with ``ctx.shared["save_model"]`` and checks it reloads with
``ctx.shared["load_model"]`` when a stage has set them (see lowcarb.compress.saved).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lowcarb.compress.saved import load_compressed, save_compressed
from lowcarb.pipeline.context import RunContext

RANKS = "lowrank_ranks"
QUANTIZE = "quantize_summary"
EXAMPLE = "quantize_example"


def _save(ctx: RunContext, folder: Path) -> Path:
    summary = ctx.shared.get(QUANTIZE)
    return save_compressed(
        ctx.handle,
        folder,
        ranks=ctx.shared.get(RANKS) or {},
        quantize_config=summary.config if summary is not None else None,
        backend=summary.backend if summary is not None else None,
        example=ctx.shared.get(EXAMPLE),
    )


def remember(ctx: RunContext, **values: Any) -> None:
    """Record what the final save needs (ranks, quantization summary, an example batch)."""
    if RANKS in values:
        ranks = dict(ctx.shared.get(RANKS) or {})
        ranks.update(values.pop(RANKS))
        ctx.shared[RANKS] = ranks
    ctx.shared.update(values)
    ctx.shared["save_model"] = _save
    ctx.shared["load_model"] = load_compressed
