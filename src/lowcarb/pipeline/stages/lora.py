"""The `lora` stage: train LoRA adapters (plus named modules) instead of the whole model."""

from __future__ import annotations

from typing import Any, Literal

from lowcarb import files
from lowcarb.adapt import lora, peft_format
from lowcarb.adapt.lora import LoraConfig
from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.registry import (
    TrainOverrides,
    register_stage,
    technique_fields,
    technique_values,
)
from lowcarb.pipeline.tasks import CAUSAL_LM, TASK_NAMES

# LoraConfig's fields. target_modules and modules_to_save unset (None) take the task's default:
# a classifier adapts every Linear layer and trains its fresh head in full; a causal LM adapts
# every projection of its blocks (Llama names; all-linear on other models) and nothing else.
# Unset training values come from the recipe's `train:` section (LoRA usually wants a higher lr).
# Why all-linear for classifiers: in the issue-18 sweep (MiniLM, 8,000 SST-2 phrases, scored on
# 2,000 held-out training phrases) r=8 on every Linear at lr 1e-3 for 3 epochs reached 0.892,
# query/value only at its best lr 0.881 (benchmarks/sweeps/lora_sst2.json). For that classifier,
# LoraConfig's dropout 0.0 was kept: with the lora-minilm recipe's budget (seed 0), no dropout
# scored 0.8905 there against 0.879 with 0.1, in 0.87 of the training time
# (benchmarks/sweeps/lora_dropout_sst2.json). Causal LMs were not swept for dropout.
CLASSIFIER_DEFAULTS: dict[str, Any] = {"target_modules": "all-linear", "modules_to_save": ("classifier",)}
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_LoraFields = technique_fields(
    LoraConfig,
    defaults={"target_modules": None, "modules_to_save": None},
    types={"target_modules": tuple[str, ...] | str | None, "modules_to_save": tuple[str, ...] | None},
)


class LoraStageConfig(_LoraFields, TrainOverrides):  # type: ignore[misc, valid-type]
    # Merge the adapters into the weights after training, so the model serves with no extra cost.
    merge: bool = True
    # Adapter file written to the run's artifacts (adapter/): PEFT's format, lowcarb's, or none.
    save_adapter: Literal["peft", "lowcarb", "none"] = "peft"

    def technique(self, defaults: dict[str, Any] | None = None) -> LoraConfig:
        """The LoraConfig; unset targets come from `defaults` (the task's; a classifier's if None)."""
        given = technique_values(self, LoraConfig, skip_unset=True)
        return LoraConfig(**{**(defaults or CLASSIFIER_DEFAULTS), **given})


def task_defaults(ctx: RunContext) -> dict[str, Any]:
    """What LoRA adapts when the recipe does not say: per task, and per model for causal LMs."""
    if ctx.recipe.task != CAUSAL_LM:
        return CLASSIFIER_DEFAULTS
    names = {n.rpartition(".")[2] for n, _ in ctx.model.named_modules()}
    targets = LLAMA_PROJECTIONS if set(LLAMA_PROJECTIONS) <= names else "all-linear"
    return {"target_modules": targets, "modules_to_save": ()}


@register_stage("lora", LoraStageConfig, tasks=TASK_NAMES)
def lora_stage(ctx: RunContext, cfg: LoraStageConfig) -> RunContext:
    """Fine-tune with LoRA adapters on the frozen model, then merge them into a plain model."""
    summary = lora.apply(ctx.model, cfg.technique(task_defaults(ctx)))
    fit_summary = ctx.train_task(ctx.train_config(cfg))
    adapter_path = None
    folder = ctx.artifacts_dir / "adapter"
    if cfg.save_adapter != "none":
        # Written whole or not at all: the weights go to a temporary folder renamed at the end.
        with files.replace_folder(folder) as tmp:
            if cfg.save_adapter == "peft" and ctx.recipe.task == CAUSAL_LM:
                # PEFT's task type lets AutoPeftModelForCausalLM pick the model class when it loads.
                peft_format.save_peft(ctx.model, tmp, task_type="CAUSAL_LM")
            elif cfg.save_adapter == "peft":
                peft_format.save_peft(ctx.model, tmp)
            else:
                peft_format.save_adapter(ctx.model, tmp)
        adapter_path = str(folder)
    if cfg.merge:
        ctx.model = lora.merge_and_unload(ctx.model)
        # A merged model trains like the original: everything trainable again for later stages.
        for p in ctx.model.parameters():
            p.requires_grad_(True)
    ctx.note(**summary.to_dict(), **fit_summary, adapter=adapter_path, merged=cfg.merge)
    return ctx
