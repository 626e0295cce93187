"""The `distill` stage on task: causal-lm (and the student size both tasks read).

The teacher is the run's model so far (LoRA adapters merged into it first); the student is a copy
with fewer decoder blocks (lowcarb.compress.distill.select_layers), trained by
lowcarb.compress.distill.distill_causal_lm: logit KD per response token (`kd_tokens: all`: per
prompt token too), or next-token cross-entropy alone (`method: hard`). Default student: half the teacher's blocks, evenly
spaced with the first and the last kept (`layers:` a count, a fraction or a list). What only an encoder student can do (MiniLM relations,
TinyBERT intermediate matching, XtremeDistil, a narrower width, a checkpoint teacher) is refused
before the run does any work.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from torch import nn

from lowcarb.adapt import lora
from lowcarb.compress.distill import encoder_layers, select_layers, spread_layers
from lowcarb.compress.distill.causal_lm import distill_causal_lm
from lowcarb.errors import ConfigError
from lowcarb.models.transforms import has_transforms, transform_log
from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.tasks import CAUSAL_LM
from lowcarb.train.memory import gradient_checkpointing

if TYPE_CHECKING:
    from lowcarb.pipeline.stages.distill import DistillStageConfig

# Stages after which the model can no longer be a teacher whose blocks a student copies.
COMPRESSING_STAGES = ("lowrank", "quantize")
# Settings of the stage that only an encoder (classifier) student reads.
ENCODER_ONLY = ("teacher", "student_from", "hidden_size", "num_heads", "intermediate_size", "init",
                "relation_heads", "teacher_layer", "minilm_version", "unlabelled")  # fmt: skip
CAUSAL_LM_METHODS = ("kd", "hard")
# The positions a causal LM's KD covers when the stage does not say (kd_tokens):
KD_TOKENS_DEFAULT = "response"
# Loss settings -> the methods that read them; any other method would ignore them silently.
LOSS_SETTING_USERS: dict[str, tuple[str, ...]] = {
    "temperature": ("kd", "minilm", "tinybert"),
    "alpha": ("kd", "minilm", "tinybert"),
    "relation_heads": ("minilm",),
    "teacher_layer": ("minilm",),
    "minilm_version": ("minilm",),
}


def check_loss_settings(cfg: DistillStageConfig) -> None:
    """Refuse a loss setting the chosen method does not read (temperature with method: hard...)."""
    unread = [name for name, users in LOSS_SETTING_USERS.items()
              if name in cfg.model_fields_set and cfg.method not in users]  # fmt: skip
    if unread:
        used_by = "; ".join(f"{name} is read by method {', '.join(LOSS_SETTING_USERS[name])}" for name in unread)
        raise ConfigError(f"distill: method {cfg.method} does not use {', '.join(unread)} ({used_by}): "
                          "remove the setting, or choose a method that reads it")  # fmt: skip


def student_size(cfg: DistillStageConfig, teacher: nn.Module) -> tuple[tuple[int, ...] | None, int | None]:
    """The stage's `layers` / `num_layers` as (teacher blocks named, block count): a fraction is
    of the teacher's blocks (rounded, at least one)."""
    if isinstance(cfg.layers, list):
        return tuple(cfg.layers), cfg.num_layers
    if isinstance(cfg.layers, float):
        return None, max(1, round(cfg.layers * len(encoder_layers(teacher))))
    if isinstance(cfg.layers, int):
        return None, cfg.layers
    return None, cfg.num_layers


def decoder_blocks(cfg: DistillStageConfig, teacher: nn.Module) -> tuple[int, ...]:
    """The teacher's decoder blocks the student keeps: the list given, or a count evenly spaced
    with the first and last kept (default: half of them)."""
    total = len(encoder_layers(teacher))
    named, count = student_size(cfg, teacher)
    if named is not None:
        bad = [i for i in named if not 0 <= i < total]
        if bad or len(set(named)) != len(named):
            raise ConfigError(
                f"distill: layers {list(named)} must name distinct teacher blocks 0..{total - 1}"
            )
        return named
    count = count or max(1, total // 2)
    if count > total:
        raise ConfigError(f"distill: layers: {count} but the teacher has {total} decoder blocks")
    if count == total:
        raise ConfigError(
            f"distill: the student would keep all {total} decoder blocks (nothing is compressed); "
            f"set layers: to fewer blocks, for example {max(1, total // 2)}"
        )
    return spread_layers(count, total)


def check_distill(ctx: RunContext, cfg: DistillStageConfig) -> None:
    """Before any stage runs: a causal LM distils with kd or hard into fewer decoder blocks."""
    if ctx.recipe.task != CAUSAL_LM:
        if "kd_tokens" in cfg.model_fields_set:
            raise ConfigError(
                f"distill: kd_tokens applies to task causal-lm (KD over prompt tokens too); task "
                f"{ctx.recipe.task} predicts one label per example: remove kd_tokens"
            )
        check_loss_settings(cfg)
        return
    foreign = [name for name in ENCODER_ONLY if name in cfg.model_fields_set]
    if cfg.method not in CAUSAL_LM_METHODS:
        foreign.insert(0, f"method: {cfg.method}")
    if cfg.method == "hard" and "kd_tokens" in cfg.model_fields_set:
        raise ConfigError("distill: kd_tokens sets the tokens KD covers; method: hard has no KD term "
                          "(remove kd_tokens, or use method: kd)")  # fmt: skip
    if foreign:
        raise ConfigError(
            f"distill: {', '.join(foreign)} does not apply to task causal-lm (encoder distillation); "
            "a causal LM distils the model so far with method kd (temperature, alpha) or hard into "
            "fewer decoder blocks (layers: a count, a fraction or a list)"
        )
    check_loss_settings(cfg)  # after `foreign`: encoder-only settings get that message
    decoder_blocks(cfg, ctx.model)  # a bad block list fails now, not after earlier stages
    before = stages_before(ctx, cfg)
    late = [name for name in before if name in COMPRESSING_STAGES]
    if late:
        raise ConfigError(
            f"distill comes after {', '.join(late)} in stages: put distill before the stages that "
            "quantize or factorize the model (distil, then compress the student)"
        )


def stages_before(ctx: RunContext, cfg: Any) -> list[str]:
    """The names of the recipe's stages that run before the one configured by `cfg`."""
    names: list[str] = []
    for step in ctx.recipe.stages:
        if step.config is cfg:
            return names
        names.append(step.name)
    return names


def teacher_of(ctx: RunContext) -> tuple[nn.Module, bool]:
    """The run's model as the teacher, with any unmerged LoRA adapters merged into its weights
    (the student copies the weights the model computes with); True when it merged."""
    model = ctx.model
    # Only LoRA may be in the model's transform log: it is merged away below; anything else
    # (factors, int8) would leave the student a log naming the teacher's blocks.
    kinds = sorted({type(r.config).__name__ for r in transform_log(model)} - {lora.LoraConfig.__name__})
    if has_transforms(model) and kinds:
        raise ConfigError(
            f"distill: the model so far carries {', '.join(kinds)}; put distill before the stages "
            "that quantize or factorize the model (distil, then compress the student)"
        )
    if not lora.lora_layers(model):
        return model, False
    ctx.model = lora.merge_and_unload(model)
    return ctx.model, True


def distill_causal_lm_stage(
    ctx: RunContext,
    cfg: DistillStageConfig,
    method: Any,
) -> RunContext:
    """Replace the causal LM with a student of fewer decoder blocks trained on its logits."""
    teacher, merged = teacher_of(ctx)
    student, built = select_layers(teacher, decoder_blocks(cfg, teacher))
    for p in student.parameters():
        p.requires_grad_(True)  # LoRA left the base weights frozen; the student trains them all
    # The student's lm_head is the teacher's, trained: no fresh-head lr (train.head_lr) for it.
    train = dataclasses.replace(ctx.train_config(cfg), head_lr=None)
    loader = ctx.loader("train", train.batch_size, shuffle=True, seed=train.seed)
    # train.gradient_checkpointing as in the train stage: the student trains every weight
    with gradient_checkpointing(student, train.gradient_checkpointing):
        summary = distill_causal_lm(student, teacher, loader, method, train)
    ctx.model = student
    notes = summary.to_dict()
    notes["stages"] = [{k: v for k, v in s.items() if k != "history"} for s in notes["stages"]]
    ctx.note(
        **notes,
        teacher_layers=list(built.teacher_layers),
        teacher_blocks=len(encoder_layers(teacher)),
        student_blocks=len(built.teacher_layers),
        student_init=built.init,
        teacher="the model so far" + (" (LoRA adapters merged)" if merged else ""),
        kd_tokens=getattr(method, "tokens", None),  # None: method hard, no KD term
        train_examples=len(ctx.data.train),
    )
    return ctx
