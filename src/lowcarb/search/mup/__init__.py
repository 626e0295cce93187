"""muP (Maximal Update Parametrization) and muTransfer, small and exact.

Tune a narrow proxy, transfer its hyperparameters to the wide model (Tensor Programs V,
Yang et al. 2022). Build a width-parametrized model with `build_model(MupModelConfig(...))`,
train it with `optimizer(model, "adamw", lr=...)`, check it with `coord_check`, transfer with
`mutransfer`.
"""

from lowcarb.search.mup.config import MupModelConfig
from lowcarb.search.mup.init import init_weights
from lowcarb.search.mup.io import load, save
from lowcarb.search.mup.layers import MuReadout
from lowcarb.search.mup.models import build_model, construct
from lowcarb.search.mup.optim import optimizer, param_groups
from lowcarb.search.mup.shapes import (
    BaseShape,
    get_base_shapes,
    infer_base_shapes,
    load_base_shapes,
    save_base_shapes,
    set_base_shapes,
)

__all__ = [
    "BaseShape",
    "MuReadout",
    "MupModelConfig",
    "build_model",
    "construct",
    "get_base_shapes",
    "infer_base_shapes",
    "init_weights",
    "load",
    "load_base_shapes",
    "optimizer",
    "param_groups",
    "save",
    "save_base_shapes",
    "set_base_shapes",
]
