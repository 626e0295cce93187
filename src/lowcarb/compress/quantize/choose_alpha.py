"""Choose the SmoothQuant strength on data: the alpha whose int8 outputs stay closest to fp32."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lowcarb.compress.quantize.api import quantize_
from lowcarb.compress.quantize.configs import DynamicInt8
from lowcarb.models.surgery import call_args
from lowcarb.train.batches import model_device

__all__ = ["choose_smooth_alpha"]


def _logits(model: nn.Module, batch: Any) -> Tensor:
    args, kwargs = call_args(batch, model_device(model))
    out = model(*args, **kwargs)
    return (out.logits if hasattr(out, "logits") else out).float()


def choose_smooth_alpha(
    model: nn.Module,
    config: DynamicInt8,
    calibration: Iterable[Any],
    held_out: Iterable[Any],
    alphas: Iterable[float | None] = (None, 0.3, 0.5, 0.7, 0.85),
) -> tuple[float | None, dict[str, float]]:
    """The smoothing strength whose int8 model's outputs are closest (mean squared error) to the
    fp32 model's on ``held_out`` batches; ``model`` is left as it was. Choose on data the model
    will be judged on never: pass training or calibration batches, not the evaluation set.

    Returns the best alpha (None: no smoothing) and the error of every alpha tried.
    """
    held = list(held_out)
    calib = list(calibration)
    model.eval()
    with torch.no_grad():
        reference = [_logits(model, b) for b in held]
    errors: dict[str, float] = {}
    best: tuple[float, float | None] | None = None
    for alpha in alphas:
        trial = copy.deepcopy(model)
        cfg = dataclasses.replace(config, smooth_alpha=alpha)
        summary = quantize_(trial, cfg, calibration=calib if alpha is not None else None)
        assert summary.model is not None
        with torch.no_grad():
            err = sum(
                float(((_logits(summary.model, b) - r) ** 2).mean())
                for b, r in zip(held, reference, strict=True)
            ) / max(1, len(held))
        errors[str(alpha)] = err
        if best is None or err < best[0]:
            best = (err, alpha)
    assert best is not None
    return best[1], errors
