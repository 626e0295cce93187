"""The `lowrank` stage: factorize Linear/Conv2d layers (spectral init), then a short recovery
fine-tune with Frobenius decay on the factors (Khodak et al., ICLR 2021).

The recovery learns from the model as it was before factorizing (logit KD, T = 2, half the loss on
the labels: `recover_loss: kd`) or from the labels alone (`ce`).

Which layers (`targets`, fnmatch patterns over module names, minus `exclude`):
- a classifier: every Linear and Conv2d (`*`);
- a causal LM (`task: causal-lm`): the MLP projections of every decoder block (`gate_proj`,
  `up_proj`, `down_proj`). The MLP holds most of a block's Linear weights (3/4 in SmolLM2-135M:
  3 x 576 x 1536 against attention's 0.88 M; about 2/3 in Llama-2-7B), so that is where a rank
  cut saves parameters and decode time. Attention stays dense: its grouped-query k/v projections
  are already narrow (576 x 192 in SmolLM2: rank 144 breaks even), so factorizing them saves
  little. The (tied) lm_head and the embeddings are never factorized, whatever `targets` says:
  the embedding keeps the full matrix anyway, so factorizing a tied head adds parameters, and the
  vocabulary logits carry every token's error. On a causal LM, `recover_loss: kd` learns the dense
  model's next-token distributions on the response tokens (lowcarb.compress.distill.causal_lm),
  `ce` the plain next-token loss on them.
"""

from __future__ import annotations

import copy
from typing import Literal

from pydantic import Field
from torch import nn

from lowcarb.compress import lowrank
from lowcarb.compress.distill import LogitKD, distill
from lowcarb.compress.lowrank import LowRankConfig
from lowcarb.errors import ConfigError
from lowcarb.pipeline.context import RunContext, fit_notes
from lowcarb.pipeline.registry import (
    TrainOverrides,
    register_stage,
    technique_fields,
    technique_values,
)
from lowcarb.pipeline.tasks import CAUSAL_LM, TASK_NAMES
from lowcarb.train.causal_lm import causal_lm_loss
from lowcarb.train.loop import default_param_groups, fit
from lowcarb.train.memory import gradient_checkpointing

# The MLP projections of a Llama-style decoder block (Llama, Mistral, Qwen2, SmolLM2 name them so).
CAUSAL_LM_TARGETS = ("*.gate_proj", "*.up_proj", "*.down_proj")

# How to choose ranks: one of param_ratio, energy, rank (param_ratio 0.5 when none is set).
# targets unset (None): the task's default (every layer of a classifier, the MLP of a causal LM).
_LowRankFields = technique_fields(
    LowRankConfig,
    defaults={"param_ratio": None, "targets": None},
    types={"targets": tuple[str, ...] | None},
)


class LowRankStageConfig(_LowRankFields, TrainOverrides):  # type: ignore[misc, valid-type]
    # The recovery fine-tune after factorizing (0 epochs and no max_steps: none).
    recover: bool = True
    # "frobenius": penalise ||UV||_F^2 and exclude U, V from weight decay (the paper's choice);
    # "weight": ordinary AdamW weight decay on U and V (for comparison).
    decay: Literal["frobenius", "weight"] = "frobenius"
    frobenius_decay: float = Field(default=1e-4, ge=0)
    # What the recovery learns from: the dense model's logits (kd) or the labels (ce).
    recover_loss: Literal["kd", "ce"] = "kd"

    def technique(self, model: nn.Module | None = None, task: str | None = None) -> LowRankConfig:
        """The LowRankConfig; for a causal LM (`task`), unset targets are the MLP projections and
        `model`'s output embedding (lm_head) is always excluded."""
        values = technique_values(self, LowRankConfig)
        if all(values[k] is None for k in ("param_ratio", "energy", "rank")):
            values["param_ratio"] = 0.5
        if values["targets"] is None:
            values["targets"] = CAUSAL_LM_TARGETS if task == CAUSAL_LM else ("*",)
        if task == CAUSAL_LM and model is not None:
            values["exclude"] = tuple(values["exclude"]) + output_layers(model)
        return LowRankConfig(**values)


def output_layers(model: nn.Module) -> tuple[str, ...]:
    """Names of the Linear modules that hold the output embedding (lm_head, tied or not)."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is None:
        return ()
    return tuple(n for n, m in model.named_modules() if m is head or getattr(m, "weight", None) is head.weight)


def check_lowrank(ctx: RunContext, cfg: LowRankStageConfig) -> None:
    """Before any stage runs, on a causal LM: the targets name Linear layers of this model (a
    ConfigError lists them otherwise), so a typo does not fail after a long fine-tune."""
    if ctx.recipe.task != CAUSAL_LM:
        return
    _check_order(ctx, cfg)
    try:
        lowrank.select_layers(ctx.model, cfg.technique(ctx.model, CAUSAL_LM))
    except ConfigError as exc:
        head = set(output_layers(ctx.model))
        linear = [n for n, m in ctx.model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and n not in head]
        if not linear:
            raise ConfigError(
                f"lowrank: {type(ctx.model).__name__} has no nn.Linear or Conv2d layer to factorize "
                "besides its output head (GPT-2's MLP is transformers' Conv1D, for example): lowrank "
                "does not apply to this model; remove the stage"
            ) from None
        hint = "" if cfg.targets else (
            f"; the default targets are a Llama-style MLP ({' '.join(CAUSAL_LM_TARGETS)}): set the "
            "stage's targets: to this model's MLP Linear layers"
        )  # fmt: skip
        raise ConfigError(f"lowrank: {exc}{hint}") from None


def _check_order(ctx: RunContext, cfg: LowRankStageConfig) -> None:
    # Quantized layers are no longer Linear, and an unmerged LoRA wraps each projection: either
    # would make the targets match nothing only when the stage starts, after the earlier work.
    for step in ctx.recipe.stages:
        if step.config is cfg:
            return
        unmerged = step.name == "lora" and not getattr(step.config, "merge", True)
        if step.name == "quantize" or unmerged:
            what = "quantize" if step.name == "quantize" else "lora with merge: false"
            raise ConfigError(
                f"lowrank comes after {what} in stages: factorize before quantizing, and after a "
                "lora stage that merges its adapters (merge: true, the default)"
            )


@register_stage("lowrank", LowRankStageConfig, check=check_lowrank, tasks=TASK_NAMES)
def lowrank_stage(ctx: RunContext, cfg: LowRankStageConfig) -> RunContext:
    """Factorize dense layers (a causal LM's MLP) into spectral U V; recover with Frobenius decay.

    Which layers and why: the module docstring."""
    causal = ctx.recipe.task == CAUSAL_LM
    teacher = copy.deepcopy(ctx.model).eval() if cfg.recover and cfg.recover_loss == "kd" else None
    quiet = ctx.quiet or ctx.recipe.train.quiet
    summary = lowrank.apply(ctx.model, cfg.technique(ctx.model, ctx.recipe.task), quiet=quiet)
    notes = summary.to_dict()
    notes.pop("energy_kept")  # per-layer detail: the ranks say enough in the report
    if cfg.recover:
        train = ctx.train_config(cfg)
        if cfg.decay == "frobenius":
            groups = lowrank.param_groups(ctx.model, train.weight_decay)
            extra = lowrank.frobenius_decay_loss(cfg.frobenius_decay)
        else:
            groups, extra = default_param_groups(ctx.model, train.weight_decay), None
        train_loader = ctx.loader("train", train.batch_size, shuffle=True, seed=train.seed)
        # train.gradient_checkpointing as in the train stage (a causal LM's activations dominate)
        with gradient_checkpointing(ctx.model, train.gradient_checkpointing):
            if teacher is not None:
                # A causal LM has no dev accuracy to select on: distill dispatches it to per-token KD.
                dev_loader = None if causal else ctx.loader("dev", train.batch_size)
                kd = distill(ctx.model, teacher, train_loader, dev_loader, LogitKD(temperature=2.0, alpha=0.5),
                             train, extra_loss=extra, param_groups=groups)  # fmt: skip
                fit_summary = {k: v for k, v in kd.stages[-1].items() if k != "history"}
                fit_summary["teacher_forward_examples"] = kd.teacher_forward_examples
                notes.update({f"recover_{k}": v for k, v in fit_summary.items()})
            elif causal:
                result = fit(ctx.model, train_loader, None, train, loss_fn=causal_lm_loss,
                             extra_loss=extra, param_groups=groups)  # fmt: skip
                notes.update(fit_notes(result, prefix="recover_"))
            else:
                result = ctx.fit(train=train, train_loader=train_loader, extra_loss=extra, param_groups=groups)
                notes.update(fit_notes(result, prefix="recover_"))
        notes["recover_loss"] = cfg.recover_loss
    notes["decay"] = cfg.decay if cfg.recover else None
    ctx.note(**notes)
    return ctx
