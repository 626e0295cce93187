"""The `lora` stage: train LoRA adapters (plus named modules) instead of the whole model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lowcarb.adapt import lora, peft_format
from lowcarb.adapt.lora import LoraConfig
from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.registry import StageConfig, register_stage
from lowcarb.train.loop import fit


class LoraStageConfig(StageConfig):
    r: int = Field(default=8, gt=0)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    # Module-name patterns (suffix match, or globs), or "all-linear".
    target_modules: list[str] | Literal["all-linear"] = ["query", "value"]
    modules_to_save: list[str] = ["classifier"]
    use_rslora: bool = False
    # Merge the adapters into the weights after training, so the model serves with no extra cost.
    merge: bool = True
    # Adapter file written to the run's artifacts (adapter/): PEFT's format, lowcarb's, or none.
    save_adapter: Literal["peft", "lowcarb", "none"] = "peft"
    # Unset values come from the recipe's `train:` section. LoRA usually wants a higher lr.
    epochs: int | None = Field(default=None, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)


@register_stage("lora", LoraStageConfig)
def lora_stage(ctx: RunContext, cfg: LoraStageConfig) -> RunContext:
    """Fine-tune with LoRA adapters on the frozen model, then merge them into a plain model."""
    config = LoraConfig(
        r=cfg.r,
        alpha=cfg.alpha,
        dropout=cfg.dropout,
        target_modules=cfg.target_modules if isinstance(cfg.target_modules, str)
        else tuple(cfg.target_modules),
        modules_to_save=tuple(cfg.modules_to_save),
        use_rslora=cfg.use_rslora,
    )
    summary = lora.apply(ctx.model, config)
    train = ctx.train_config(epochs=cfg.epochs, max_steps=cfg.max_steps, lr=cfg.lr,
                             batch_size=cfg.batch_size)
    result = fit(
        ctx.model,
        ctx.loader("train", train.batch_size, shuffle=True, seed=train.seed),
        ctx.loader("dev", train.batch_size),
        train,
    )
    adapter_path = None
    if cfg.save_adapter != "none":
        save = peft_format.save_peft if cfg.save_adapter == "peft" else peft_format.save_adapter
        adapter_path = str(save(ctx.model, ctx.artifacts_dir / "adapter"))
    if cfg.merge:
        ctx.model = lora.merge_and_unload(ctx.model)
        # A merged model trains like the original: everything trainable again for later stages.
        for p in ctx.model.parameters():
            p.requires_grad_(True)
    fit_summary = result.to_dict()
    fit_summary.pop("history", None)
    ctx.note(**summary.to_dict(), **fit_summary, adapter=adapter_path, merged=cfg.merge)
    return ctx
