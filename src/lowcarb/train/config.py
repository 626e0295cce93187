"""`TrainConfig`: the training loop's settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """AdamW with linear warm-up then linear decay to 0, over `epochs` or `max_steps`.

    `max_steps` (when set) caps the run; the schedule spans min(max_steps, epochs x batches).
    Early stopping evaluates on dev every epoch (or every `eval_every_steps`) and stops after
    `early_stopping_patience` evaluations without a dev-accuracy gain of more than
    `early_stopping_min_delta`; with early stopping on, the best weights are restored at the end
    (`restore_best`). Without it, dev is still evaluated (history, best_dev) but the final
    weights are kept.

    `precision` is the autocast precision of the forward passes (fp32: none; bf16; fp16 with a
    gradient scaler). A recipe sets it at the top level (`precision:`), resolved with the device
    at the edge (lowcarb.train.device); the run's training settings carry the resolved value.

    `head_lr` is the learning rate of the output head (parameters under any module named in
    `head_modules`, e.g. a classifier freshly initialised for the task's labels): such a head
    starts from random weights and needs a far larger step than the pretrained body it sits on.
    None trains it at `lr`. It applies to fit's default parameter groups only.

    `frozen_modules` (dotted module paths, matched like `head_modules`) are not trained during
    the fit: no gradient is computed for them and they get no optimiser state (a transformer's
    word-embedding table is half of a small encoder's parameters, and its gradient and AdamW
    update are paid at every step). They are trainable again when fit returns.
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip_norm: float | None = 1.0
    seed: int = 0
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    eval_every_steps: int | None = None
    restore_best: bool = True
    quiet: bool = False
    precision: str = "fp32"
    head_lr: float | None = None
    head_modules: tuple[str, ...] = ("classifier", "score")
    frozen_modules: tuple[str, ...] = ()
    # Recompute activations in the backward pass instead of storing them (Hugging Face models):
    # less memory for about a third more compute. Honoured by the run's tasks (pipeline.tasks)
    # and fit_causal_lm through lowcarb.train.memory.gradient_checkpointing.
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"train precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"train.max_steps must be >= 1, got {self.max_steps}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.head_lr is not None and not self.head_lr > 0:
            raise ValueError(f"train.head_lr must be > 0 or None, got {self.head_lr}")
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(f"train.grad_clip_norm must be > 0 or None, got {self.grad_clip_norm}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(
                f"train.early_stopping_patience must be >= 1 or None, got {self.early_stopping_patience}"
            )
        if self.eval_every_steps is not None and self.eval_every_steps < 1:
            raise ValueError(f"train.eval_every_steps must be >= 1 or None, got {self.eval_every_steps}")
