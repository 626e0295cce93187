"""muP parameter groups: per-parameter learning rates and weight decay.

Rules (Tensor Programs V, Table 8, in microsoft/mup's MuReadout form), with m = width/base_width
of the dimension that grew:

| kind (see shapes.py)                          | Adam / AdamW lr | SGD lr                        |
| --------------------------------------------- | --------------- | ----------------------------- |
| matrix-like (hidden weights)                  | lr / m_fan_in   | lr * m_fan_out / m_fan_in     |
| vector-like (embeddings, biases, norms, readout weight) | lr    | lr * m                        |
| scalar-like (readout bias)                    | lr              | lr                            |

Weight decay: torch's AdamW shrinks a weight by lr * weight_decay per step and SGD's coupled decay
does the same, so when muP divides a group's lr by k we multiply its weight_decay by k: the shrink
per step stays what it is at the base width (microsoft/mup calls this decoupled_wd=False). Decay is
applied to weights with two or more dimensions only (not to biases and norm gains), as usual.

Under the standard parametrization every group keeps the base lr and weight decay.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from lowcarb.errors import ConfigError
from lowcarb.search.mup.shapes import get_base_shapes, param_scale

OptimizerName = Literal["adam", "adamw", "sgd"]
_NAMES = ("adam", "adamw", "sgd")


def _parametrization_of(model: nn.Module, given: str | None) -> str:
    if given is not None:
        if given not in ("mup", "sp"):
            raise ConfigError(f"parametrization must be 'mup' or 'sp', not {given!r}")
        return given
    cfg = getattr(model, "config", None)
    return getattr(cfg, "parametrization", "mup")


def lr_and_wd_mults(
    kind: str, fan_in_mult: float, fan_out_mult: float, width_mult: float, name: str
) -> tuple[float, float]:
    """(lr multiplier, weight-decay multiplier) for one parameter under muP."""
    if name in ("adam", "adamw"):
        lr_mult = 1.0 / fan_in_mult if kind == "matrix" else 1.0
    elif kind == "matrix":
        lr_mult = fan_out_mult / fan_in_mult
    elif kind == "vector":
        lr_mult = width_mult
    else:
        lr_mult = 1.0
    return lr_mult, 1.0 / lr_mult


def param_groups(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    parametrization: str | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups for `torch.optim` (or `lowcarb.train.fit(param_groups=...)`).

    Each group carries `lr`, `weight_decay`, and for inspection `kind` and `lr_mult`.
    `parametrization` defaults to `model.config.parametrization` (muP when the model has none).
    """
    if name not in _NAMES:
        raise ConfigError(f"unknown optimizer {name!r}; use one of {_NAMES}")
    if lr <= 0:
        raise ConfigError(f"learning rate must be positive, got {lr}")
    if weight_decay < 0:
        raise ConfigError(f"weight_decay must be non-negative, got {weight_decay}")
    mup = _parametrization_of(model, parametrization) == "mup"
    shapes = get_base_shapes(model)
    groups: dict[tuple[str, float, bool], dict[str, Any]] = {}
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        sc = param_scale(p, shapes[pname])
        if mup:
            lr_mult, wd_mult = lr_and_wd_mults(
                sc.kind, sc.fan_in_mult, sc.fan_out_mult, sc.width_mult, name
            )
        else:
            lr_mult, wd_mult = 1.0, 1.0
        decays = p.dim() >= 2 and weight_decay > 0
        key = (sc.kind, lr_mult, decays)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "lr": lr * lr_mult,
                "weight_decay": weight_decay * wd_mult if decays else 0.0,
                "kind": sc.kind,
                "lr_mult": lr_mult,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(pname)
    return list(groups.values())


def optimizer(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 1e-3,
    *,
    weight_decay: float = 0.0,
    parametrization: str | None = None,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """A torch optimizer with muP parameter groups: `optimizer(model, "adamw", lr=1e-3)`.

    Extra keyword arguments (betas, eps, momentum) go to the torch optimizer unchanged.
    """
    groups = param_groups(model, name, lr, weight_decay, parametrization)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, **kwargs)
    if name == "adam":
        # torch.optim.Adam adds weight decay to the gradient (L2), which Adam then rescales per
        # coordinate; that is not decoupled decay, so refuse rather than silently mis-scale it.
        if weight_decay > 0:
            raise ConfigError("Adam's weight decay is L2 on the gradient; use 'adamw' for decay")
        return torch.optim.Adam(groups, lr=lr, **kwargs)
    return torch.optim.AdamW(groups, lr=lr, **kwargs)
