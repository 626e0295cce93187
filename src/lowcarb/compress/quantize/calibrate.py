"""Calibration: what the inputs of chosen modules look like over a few batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from lowcarb.errors import ConfigError, DataError
from lowcarb.models.surgery import call_args
from lowcarb.train.batches import model_device

__all__ = ["observe_inputs"]

T = TypeVar("T")


def observe_inputs(
    model: nn.Module,
    names: list[str],
    calibration: Iterable[Any],
    max_batches: int,
    observe: Callable[[Tensor], T],
    combine: Callable[[T, T], T],
) -> dict[str, T]:
    """Per named module, ``observe(input)`` on every calibration batch (at most ``max_batches``),
    folded with ``combine``. No batch, or a module that never ran, is an error that says so."""
    stats: dict[str, T] = {}
    device = model_device(model)
    handles = []
    for name in names:

        def hook(_mod: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            seen = observe(args[0].detach())
            stats[name] = combine(stats[name], seen) if name in stats else seen

        handles.append(model.get_submodule(name).register_forward_pre_hook(hook))
    batches = 0
    try:
        with torch.no_grad():
            for batch in calibration:
                if batches >= max_batches:
                    break
                args, kwargs = call_args(batch, device)  # loaders give host batches
                model(*args, **kwargs)
                batches += 1
    finally:
        for h in handles:
            h.remove()
    if batches == 0:
        raise DataError("the calibration data has no batches; pass at least one")
    silent = [n for n in names if n not in stats]
    if silent:
        raise ConfigError(
            f"Linear modules {silent} never ran on the calibration batches, so they have no "
            "activation statistics; exclude them (config.exclude) or check the batches"
        )
    return stats
