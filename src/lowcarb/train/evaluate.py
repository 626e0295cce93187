"""`evaluate(model, loader) -> {"accuracy", "macro_f1", "loss", "examples"}`.

Runs where the model is; predictions, labels and the loss sum stay on the device and are read
once at the end (every read waits for a GPU).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lowcarb.train.batches import Batch, forward, model_device, to_device, to_host
from lowcarb.train.device import autocast
from lowcarb.train.progress import progress_bar

LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, torch.Tensor]]


def macro_f1(y_true: Sequence[int] | torch.Tensor, y_pred: Sequence[int] | torch.Tensor) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in y_true or y_pred
    (scikit-learn's `f1_score(average="macro")`; a class with no support and no predictions
    would otherwise score 0 and punish a model for a class the data lacks)."""
    t = torch.as_tensor(y_true, dtype=torch.long)
    p = torch.as_tensor(y_pred, dtype=torch.long)
    if t.numel() == 0:
        raise ValueError("macro_f1 of no examples is undefined")
    scores = []
    for c in torch.unique(torch.cat([t, p])).tolist():
        tp = int(((p == c) & (t == c)).sum())
        fp = int(((p == c) & (t != c)).sum())
        fn = int(((p != c) & (t == c)).sum())
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(sum(scores) / len(scores))


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    *,
    loss_fn: LossFn | None = None,
    quiet: bool = True,
    description: str = "evaluate",
    precision: str = "fp32",
) -> dict[str, float]:
    """Accuracy, macro-F1 and mean cross-entropy (or `loss_fn`'s loss) over every example,
    with forward passes under `precision`'s autocast."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    preds: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    losses: list[torch.Tensor] = []  # per batch: mean loss x batch size, on the device
    n = 0
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    try:
        with progress_bar(quiet) as bar:
            task = bar.add_task(description, total=total, status="")
            for batch in loader:
                batch = to_device(batch, device)
                labels = batch["labels"]
                with autocast(device, precision):
                    if loss_fn is not None:
                        loss, logits = loss_fn(model, batch)
                    else:
                        logits = forward(model, batch)
                        loss = F.cross_entropy(logits.float(), labels)
                size = int(labels.shape[0])
                losses.append(loss.detach().float() * size)
                n += size
                preds.append(logits.argmax(-1))
                targets.append(labels)
                bar.update(task, advance=1)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate() got an empty loader; check the split is not empty")
    y_pred, y_true = to_host(torch.cat(preds)), to_host(torch.cat(targets))
    loss_sum = float(to_host(torch.stack(losses)).double().sum())
    return {
        "accuracy": int((y_pred == y_true).sum()) / n,
        "macro_f1": macro_f1(y_true, y_pred),
        "loss": loss_sum / n,
        "examples": n,
    }
