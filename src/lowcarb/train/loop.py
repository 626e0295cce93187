"""`fit(model, train_loader, dev_loader, TrainConfig, ...)`: a plain, fast training loop.

Hooks (docs/architecture.md):
- `loss_fn(model, batch) -> (loss, logits)` replaces cross-entropy (distillation);
- `extra_loss(model) -> Tensor` is added to the loss (Frobenius decay, L1 on coefficients);
- `param_groups` replaces the default AdamW groups;
- `on_step(step, model) -> bool` runs after every optimiser step; True stops training.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lowcarb.train.batches import Batch, forward, model_device, set_seed, to_device
from lowcarb.train.config import TrainConfig
from lowcarb.train.evaluate import LossFn, evaluate
from lowcarb.train.progress import progress_bar

ExtraLoss = Callable[[nn.Module], torch.Tensor]
OnStep = Callable[[int, nn.Module], bool]


@dataclass
class FitResult:
    steps: int
    epochs: float  # fractional when stopped mid-epoch
    stop_reason: str  # "completed", "max_steps", "early_stopping" or "on_step"
    train_loss: float  # mean loss over the last 50 steps (0.0 if no step ran)
    duration_s: float
    best_dev: dict[str, float] | None = None
    best_step: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason in ("early_stopping", "on_step")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stopped_early"] = self.stopped_early
        return out


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters only; no weight decay on biases and norm scales (1-D tensors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _adamw(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, fused when every parameter allows it: on CPU the fused kernel steps MiniLM's 22.7M
    parameters about 6x faster than the default loop (0.03 s vs 0.18 s per step, 1 thread)."""
    params = [p for g in groups for p in g["params"]]
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    fusable = fusable and len({p.device for p in params}) == 1
    if fusable:
        try:
            return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=True)
        except (RuntimeError, ValueError):
            pass  # an older torch or an unsupported dtype: the plain implementation is the same maths
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def linear_warmup_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier: 0 -> 1 over warm-up, then 1 -> 0 linearly at `total_steps`."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return max(0.0, (total_steps - step) / span)

    return factor


def fit(
    model: nn.Module,
    train_loader: Iterable[Batch],
    dev_loader: Iterable[Batch] | None,
    config: TrainConfig,
    *,
    loss_fn: LossFn | None = None,
    extra_loss: ExtraLoss | None = None,
    param_groups: Sequence[dict[str, Any]] | None = None,
    on_step: OnStep | None = None,
) -> FitResult:
    """Train `model` in place; returns what happened (steps, stop reason, dev history)."""
    set_seed(config.seed)
    start = time.perf_counter()
    try:
        batches_per_epoch = len(train_loader)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ValueError("fit() needs a sized train loader (a DataLoader or a list of batches)") from exc
    if batches_per_epoch == 0:
        raise ValueError("the train loader has no batches; check the training split is not empty")
    if config.early_stopping_patience is not None and dev_loader is None:
        raise ValueError("early stopping needs a dev loader; pass dev_loader or set early_stopping_patience=None")
    total_steps = config.epochs * batches_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    groups = list(param_groups) if param_groups is not None else default_param_groups(model, config.weight_decay)
    # Materialise each group's params once: a generator (model.parameters()) is read only once.
    groups = [{**g, "params": list(g["params"])} for g in groups]
    if not any(g["params"] for g in groups):
        raise ValueError("no trainable parameters: every parameter has requires_grad=False")
    optimizer = _adamw(groups, config)
    warmup = int(math.ceil(config.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(warmup, total_steps))
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    device = model_device(model)

    history: list[dict[str, float]] = []
    best_acc, best_dev, best_step, best_state = -math.inf, None, None, None
    evals_since_best = 0
    recent_losses: list[float] = []
    step, stop_reason = 0, "completed"

    def run_eval(epoch_float: float) -> bool:
        """Evaluate on dev; True when early stopping says stop."""
        nonlocal best_acc, best_dev, best_step, best_state, evals_since_best
        metrics = evaluate(model, dev_loader, loss_fn=loss_fn, quiet=True)  # type: ignore[arg-type]
        history.append({"step": step, "epoch": epoch_float, **{f"dev_{k}": v for k, v in metrics.items()}})
        if metrics["accuracy"] > best_acc + config.early_stopping_min_delta or best_dev is None:
            best_acc, best_dev, best_step, evals_since_best = metrics["accuracy"], metrics, step, 0
            if config.restore_best and config.early_stopping_patience is not None:
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            evals_since_best += 1
        patience = config.early_stopping_patience
        return patience is not None and evals_since_best >= patience

    model.train()
    with progress_bar(config.quiet) as bar:
        task = bar.add_task("train", total=total_steps, status="")
        done = False
        for _epoch in range(config.epochs):
            for batch in train_loader:
                batch = to_device(batch, device)
                if loss_fn is not None:
                    loss, _ = loss_fn(model, batch)
                else:
                    loss = F.cross_entropy(forward(model, batch).float(), batch["labels"])
                if extra_loss is not None:
                    loss = loss + extra_loss(model)
                if not torch.isfinite(loss):
                    raise ValueError(
                        f"training loss became {float(loss.detach())} at step {step + 1}; lower train.lr "
                        "or check the data"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                recent_losses = (recent_losses + [float(loss.detach())])[-50:]
                bar.update(task, advance=1, status=f"loss {sum(recent_losses) / len(recent_losses):.4f}")
                if on_step is not None and on_step(step, model):
                    stop_reason, done = "on_step", True
                    break
                if step >= total_steps:
                    stop_reason = "max_steps" if total_steps < config.epochs * batches_per_epoch else "completed"
                    done = True
                    break
                if (
                    dev_loader is not None
                    and config.eval_every_steps is not None
                    and step % config.eval_every_steps == 0
                    and run_eval(step / batches_per_epoch)
                ):
                    stop_reason, done = "early_stopping", True
                    break
            epoch_end = done or config.eval_every_steps is None
            if dev_loader is not None and epoch_end and stop_reason != "early_stopping":
                patience_spent = run_eval(step / batches_per_epoch)  # always evaluate
                if patience_spent and not done:
                    stop_reason, done = "early_stopping", True
            if done:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(
        steps=step,
        epochs=step / batches_per_epoch,
        stop_reason=stop_reason,
        train_loss=sum(recent_losses) / len(recent_losses) if recent_losses else 0.0,
        duration_s=time.perf_counter() - start,
        best_dev=best_dev,
        best_step=best_step,
        history=history,
    )
