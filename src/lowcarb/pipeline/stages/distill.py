"""The `distill` stage: replace the model with a smaller student trained to imitate a teacher.

The teacher is the model so far (typically a fine-tuned model from an earlier `train` stage) or a
checkpoint folder (`teacher: path/to/model`). The student is built from the teacher by layer
selection (`num_layers` / `layers`) or as a smaller configuration (`hidden_size`, `num_heads`,
`intermediate_size`, with `init: truncated | fresh`), then trained with `method`:
hard (labels only), kd (Hinton), minilm (relations + KD), tinybert (intermediate matching + KD),
xtremedistil (three stages with gradual unfreezing, optionally on extra `unlabelled` text).

On task: causal-lm the student is the model so far with fewer decoder blocks (`layers: 15`, a
fraction such as `layers: 0.5`, or a list of teacher blocks; a count keeps the first and the last
block, evenly spaced between), trained with per-token logit KD on the training rows' response
tokens (`method: kd`, temperature and alpha) or next-token cross-entropy alone (`method: hard`,
the no-teacher baseline): lowcarb.compress.distill.causal_lm. Encoder options are refused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lowcarb.compress.distill import (
    HardLabels,
    Intermediate,
    LogitKD,
    Method,
    MiniLM,
    StudentConfig,
    XtremeDistil,
    build_student,
    distill,
    encoder_layers,
    select_layers,
)
from lowcarb.data import TextSplit, make_loader
from lowcarb.models.surgery import WithoutLabels
from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.registry import TrainOverrides, register_stage, technique_values
from lowcarb.pipeline.stages.distill_lm import (
    KD_TOKENS_DEFAULT,
    check_distill,
    distill_causal_lm_stage,
    student_size,
)
from lowcarb.pipeline.tasks import CAUSAL_LM, TASK_NAMES


class DistillStageConfig(TrainOverrides):
    method: Literal["hard", "kd", "minilm", "tinybert", "xtremedistil"] = "kd"
    # None: the model so far is the teacher; else a model folder (lowcarb save_model or Hugging Face).
    teacher: str | None = None
    # Build the student from the teacher (default) or from the model so far (with a checkpoint
    # teacher, e.g. a pretrained model taught by a fine-tuned one).
    student_from: Literal["teacher", "model"] = "teacher"
    # Layer selection: teacher blocks to keep (a list), or how many (a count, or a fraction of
    # the teacher's blocks in (0, 1)); a count is evenly spaced, ending at the top block (a causal
    # LM also keeps the bottom one).
    layers: list[int] | int | float | None = None
    num_layers: int | None = Field(default=None, gt=0)
    # A smaller configuration (Hugging Face models and the reference transformer).
    hidden_size: int | None = Field(default=None, gt=0)
    num_heads: int | None = Field(default=None, gt=0)
    intermediate_size: int | None = Field(default=None, gt=0)
    init: Literal["truncated", "fresh"] = "truncated"
    # Loss settings; setting one the method does not read is an error (distill_lm.check_loss_settings).
    temperature: float = Field(default=2.0, gt=0)
    alpha: float = Field(default=0.5, ge=0, le=1)  # weight of the soft (teacher) term
    # Causal LM, method kd: the positions the soft term covers, "response" (the labelled tokens)
    # or "all" (the prompt's tokens too). None: KD_TOKENS_DEFAULT (lowcarb.pipeline.stages.distill_lm).
    kd_tokens: Literal["response", "all"] | None = None
    relation_heads: int | None = Field(default=None, gt=0)
    teacher_layer: int = -1
    minilm_version: Literal[1, 2] = 2
    # XtremeDistil: a text file (one text per line, .txt) or table (the recipe's text column)
    # of unlabelled text for the teacher-only stages.
    unlabelled: str | None = None

    @model_validator(mode="after")
    def _one_student_shape(self) -> DistillStageConfig:
        if isinstance(self.layers, float) and not 0 < self.layers < 1:
            raise ValueError(f"layers: {self.layers} is not a fraction in (0, 1); give a count, a "
                             "fraction such as 0.5, or a list of teacher blocks")  # fmt: skip
        if isinstance(self.layers, int) and self.layers < 1:
            raise ValueError(f"layers: {self.layers}; a student keeps at least one block")
        if isinstance(self.layers, list) and self.num_layers is not None and len(self.layers) != self.num_layers:
            raise ValueError(f"layers {self.layers} and num_layers={self.num_layers} disagree")
        if not isinstance(self.layers, list | None) and self.num_layers is not None:
            raise ValueError("give the student's size once: layers (a count or fraction) or num_layers")
        if self.unlabelled is not None and self.method != "xtremedistil":
            raise ValueError("unlabelled text is used by method: xtremedistil only")
        return self


def _method(cfg: DistillStageConfig, causal_lm: bool = False) -> Method:
    tokens = (cfg.kd_tokens or KD_TOKENS_DEFAULT) if causal_lm else "response"
    kd = LogitKD(temperature=cfg.temperature, alpha=cfg.alpha, tokens=tokens)
    if cfg.method == "hard":
        return HardLabels()
    if cfg.method == "kd":
        return kd
    if cfg.method == "minilm":
        return MiniLM(
            version=cfg.minilm_version,
            relation_heads=cfg.relation_heads,
            teacher_layer=cfg.teacher_layer,
            kd=kd,
        )
    if cfg.method == "tinybert":
        return Intermediate(kd=kd)
    return XtremeDistil()


def load_teacher(ctx: RunContext, folder: str) -> Any:
    """A teacher model saved in `folder` (shared with the autodistil stage)."""
    from lowcarb.models import load_model

    path = Path(folder)
    if not path.exists():
        raise ValueError(f"distill.teacher: {folder} does not exist; give a saved model folder")
    handle = load_model(path)
    if handle.num_labels != ctx.handle.num_labels:
        raise ValueError(
            f"distill.teacher: {folder} predicts {handle.num_labels} labels but the data has "
            f"{ctx.handle.num_labels}; use a teacher fine-tuned on this task"
        )
    return handle.model.to(ctx.device)  # a folder loads onto the CPU; the run may be on a GPU


def _texts_only(texts: tuple[str, ...], ctx: RunContext, batch_size: int, seed: int) -> WithoutLabels:
    """A sized loader over unlabelled texts: the batches carry no 'labels'."""
    split = TextSplit(texts, tuple(0 for _ in texts), "unlabelled")
    return WithoutLabels(make_loader(
        split, batch_size, shuffle=True, tokenizer=ctx.tokenizer,
        max_length=ctx.data.max_length, seed=seed, pin_memory=ctx.placement.pin_memory,
    ))  # fmt: skip


def _read_unlabelled(path_text: str, ctx: RunContext) -> tuple[str, ...]:
    path = Path(path_text)
    if not path.is_file():
        raise ValueError(f"distill.unlabelled: {path_text} is not a file; give a .txt or a table")
    if path.suffix == ".txt":
        texts = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    else:
        from lowcarb.data.tables import read_table

        texts = read_table(path, ctx.recipe.data.text_column, ctx.recipe.data.label_column).texts
    texts = tuple(t for t in texts if t)
    if not texts:
        raise ValueError(f"distill.unlabelled: {path_text} holds no text")
    return texts


@register_stage("distill", DistillStageConfig, check=check_distill, tasks=TASK_NAMES)
def distill_stage(ctx: RunContext, cfg: DistillStageConfig) -> RunContext:
    """Distil the model (or a checkpoint teacher) into a smaller student, which replaces it."""
    if ctx.recipe.task == CAUSAL_LM:
        return distill_causal_lm_stage(ctx, cfg, _method(cfg, causal_lm=True))
    teacher = load_teacher(ctx, cfg.teacher) if cfg.teacher else ctx.model
    base = teacher if cfg.student_from == "teacher" else ctx.model
    sized = any(v is not None for v in (cfg.hidden_size, cfg.num_heads, cfg.intermediate_size))
    layers, num_layers = student_size(cfg, base)
    if sized:
        # The stage's student fields are StudentConfig's, with the recipe's seed.
        values = technique_values(cfg, StudentConfig) | {
            "layers": layers, "num_layers": num_layers, "seed": ctx.recipe.train.seed,
        }  # fmt: skip
        student, built = build_student(base, StudentConfig(**values))
    elif layers is not None or num_layers is not None or cfg.student_from == "teacher":
        # Default student: half the teacher's blocks.
        count = num_layers or (None if layers else max(1, len(encoder_layers(base)) // 2))
        student, built = select_layers(base, layers, num_layers=count)
    else:
        student, built = ctx.model, None
    train = ctx.train_config(cfg)
    # The student's head is the teacher's, already trained: the recipe's lr for a fresh head
    # (train.head_lr) would undo it.
    train = dataclasses.replace(train, head_lr=None)
    unlabelled = (
        _texts_only(_read_unlabelled(cfg.unlabelled, ctx), ctx, train.batch_size, train.seed)
        if cfg.unlabelled
        else None
    )
    summary = distill(
        student,
        teacher,
        ctx.loader("train", train.batch_size, shuffle=True, seed=train.seed),
        ctx.loader("dev", train.batch_size),
        _method(cfg),
        train,
        unlabelled_loader=unlabelled,
    )
    ctx.model = student
    notes = summary.to_dict()
    notes["stages"] = [
        {k: v for k, v in stage.items() if k != "history"} for stage in notes["stages"]
    ]
    if built is not None:
        notes["teacher_layers"] = list(built.teacher_layers)
        notes["student_init"] = built.init
    notes["teacher"] = cfg.teacher or "the model so far"
    ctx.note(**notes)
    return ctx
