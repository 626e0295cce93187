"""The `lora` stage: train LoRA adapters (plus named modules) instead of the whole model."""

from __future__ import annotations

from typing import Literal

from lowcarb.adapt import lora, peft_format
from lowcarb.adapt.lora import LoraConfig
from lowcarb.pipeline.context import RunContext, fit_notes
from lowcarb.pipeline.registry import (
    TrainOverrides,
    register_stage,
    technique_fields,
)

# LoraConfig's fields; in a recipe the classifier head trains with the adapters by default.
# Unset training values come from the recipe's `train:` section (LoRA usually wants a higher lr).
_LoraFields = technique_fields(LoraConfig, defaults={"modules_to_save": ("classifier",)})


class LoraStageConfig(_LoraFields, TrainOverrides):  # type: ignore[misc, valid-type]
    # Merge the adapters into the weights after training, so the model serves with no extra cost.
    merge: bool = True
    # Adapter file written to the run's artifacts (adapter/): PEFT's format, lowcarb's, or none.
    save_adapter: Literal["peft", "lowcarb", "none"] = "peft"


@register_stage("lora", LoraStageConfig)
def lora_stage(ctx: RunContext, cfg: LoraStageConfig) -> RunContext:
    """Fine-tune with LoRA adapters on the frozen model, then merge them into a plain model."""
    summary = lora.apply(ctx.model, cfg.technique())
    result = ctx.fit(cfg)
    adapter_path = None
    if cfg.save_adapter != "none":
        save = peft_format.save_peft if cfg.save_adapter == "peft" else peft_format.save_adapter
        adapter_path = str(save(ctx.model, ctx.artifacts_dir / "adapter"))
    if cfg.merge:
        ctx.model = lora.merge_and_unload(ctx.model)
        # A merged model trains like the original: everything trainable again for later stages.
        for p in ctx.model.parameters():
            p.requires_grad_(True)
    ctx.note(**summary.to_dict(), **fit_notes(result), adapter=adapter_path, merged=cfg.merge)
    return ctx
