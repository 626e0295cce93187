"""Base shapes: which dimensions of each parameter grow with width, and by how much.

muP needs, for every parameter, the shape it had at the base width. We find it the way
microsoft/mup does: build the same model at two widths (on the meta device, so nothing is
allocated), compare parameter shapes, and call every dimension that differs "infinite"
(width-dependent). A dimension that is the same at both widths is "finite" (vocabulary, classes,
context length). The result is a plain mapping that is saved next to the weights (JSON), so a
reloaded model keeps its base shapes without rebuilding the base model.

Parameter kinds (the muP rules dispatch on these):
- matrix-like: two infinite dimensions (hidden weights);
- vector-like: one infinite dimension (input embeddings, biases, norm gains, and the readout
  weight, whose 1/width factor lives in the readout's output multiplier instead);
- scalar-like: no infinite dimension (readout bias over a fixed vocabulary).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from lowcarb import files
from lowcarb.errors import MissingPathError, ModelError

ParamKind = Literal["matrix", "vector", "scalar"]

# The attribute under which a model carries its base shapes (a plain dict, not a parameter).
_ATTR = "mup_base_shapes"


@dataclass(frozen=True)
class Dim:
    """One dimension of a parameter: its size at the base width and whether it grows with width."""

    base: int
    infinite: bool


@dataclass(frozen=True)
class BaseShape:
    """The base shape of one parameter (torch layout: a Linear weight is (fan_out, fan_in))."""

    dims: tuple[Dim, ...]

    @property
    def n_infinite(self) -> int:
        return sum(d.infinite for d in self.dims)

    @property
    def kind(self) -> ParamKind:
        n = self.n_infinite
        return "matrix" if n >= 2 else "vector" if n == 1 else "scalar"

    def to_json(self) -> list[list[int | bool]]:
        return [[d.base, d.infinite] for d in self.dims]

    @classmethod
    def from_json(cls, raw: list[list[int | bool]]) -> BaseShape:
        return cls(tuple(Dim(int(b), bool(i)) for b, i in raw))


BaseShapes = dict[str, BaseShape]


@dataclass(frozen=True)
class ParamScale:
    """How much a parameter grew relative to its base shape (1.0 on a finite dimension)."""

    kind: ParamKind
    fan_in_mult: float
    fan_out_mult: float

    @property
    def width_mult(self) -> float:
        """The growth of the (single) infinite dimension of a vector-like parameter."""
        if self.kind == "vector":
            return self.fan_in_mult if self.fan_in_mult != 1.0 else self.fan_out_mult
        return self.fan_in_mult


def infer_base_shapes(base: nn.Module, delta: nn.Module) -> BaseShapes:
    """Compare the parameters of the same model built at two widths.

    `base` is the model at the base width; `delta` the same model at any other width. Raises
    ValueError when the two do not have the same parameters or when nothing depends on width.
    """
    base_params = dict(base.named_parameters())
    delta_params = dict(delta.named_parameters())
    if base_params.keys() != delta_params.keys():
        missing = sorted(base_params.keys() ^ delta_params.keys())[:5]
        raise ModelError(
            "the base and delta models have different parameters "
            f"(for example {missing}); build both from the same model class, changing only width"
        )
    shapes: BaseShapes = {}
    for name, p in base_params.items():
        q = delta_params[name]
        if p.dim() != q.dim():
            raise ModelError(
                f"parameter {name!r} has rank {p.dim()} in base and {q.dim()} in delta"
            )
        shapes[name] = BaseShape(
            tuple(Dim(a, a != b) for a, b in zip(p.shape, q.shape, strict=True))
        )
    if not any(s.n_infinite for s in shapes.values()):
        raise ModelError(
            "no parameter dimension changed between the base and delta models: the model has no "
            "width-dependent dimension, so muP has nothing to scale (build the delta model at a "
            "different width)"
        )
    return shapes


def set_base_shapes(model: nn.Module, shapes: Mapping[str, BaseShape]) -> nn.Module:
    """Attach base shapes to `model` after checking they fit it; returns the model."""
    params = dict(model.named_parameters())
    if params.keys() != shapes.keys():
        missing = sorted(params.keys() ^ shapes.keys())[:5]
        raise ModelError(
            f"base shapes do not match the model's parameters (for example {missing}); "
            "infer them from the same model class"
        )
    for name, p in params.items():
        s = shapes[name]
        if len(s.dims) != p.dim():
            raise ModelError(
                f"base shape of {name!r} has rank {len(s.dims)}, parameter has {p.dim()}"
            )
        for size, d in zip(p.shape, s.dims, strict=True):
            if not d.infinite and size != d.base:
                raise ModelError(
                    f"parameter {name!r} has size {size} on a dimension that is fixed at "
                    f"{d.base} in the base shapes; is this the same model?"
                )
            if d.infinite and size < d.base:
                raise ModelError(
                    f"parameter {name!r} has size {size} on a width dimension whose base is "
                    f"{d.base}: the width is smaller than the base width; use a base width "
                    "no larger than the model's width"
                )
    object.__setattr__(model, _ATTR, dict(shapes))
    return model


def get_base_shapes(model: nn.Module) -> BaseShapes:
    shapes = getattr(model, _ATTR, None)
    if shapes is None:
        raise ModelError(
            "this model has no muP base shapes; build it with lowcarb.search.mup.build_model(...) "
            "or call lowcarb.search.mup.set_base_shapes(model, infer_base_shapes(base, delta))"
        )
    return shapes


def param_scale(p: torch.Tensor, shape: BaseShape) -> ParamScale:
    """Width multipliers of a parameter against its base shape (fan_in is the last dimension)."""
    dims = shape.dims
    if p.dim() == 0:
        return ParamScale(shape.kind, 1.0, 1.0)
    fan_out_mult = p.shape[0] / dims[0].base if dims[0].infinite else 1.0
    fan_in_mult = p.shape[-1] / dims[-1].base if p.dim() > 1 and dims[-1].infinite else 1.0
    return ParamScale(shape.kind, fan_in_mult, fan_out_mult)


def save_base_shapes(shapes: Mapping[str, BaseShape], path: str | Path) -> Path:
    path = Path(path)
    files.write_json(path, shapes_to_json(shapes), indent=1)
    return path


def shapes_to_json(shapes: Mapping[str, BaseShape]) -> dict[str, list[list[int | bool]]]:
    return {k: v.to_json() for k, v in shapes.items()}


def shapes_from_json(raw: Mapping[str, list[list[int | bool]]]) -> BaseShapes:
    return {k: BaseShape.from_json(v) for k, v in raw.items()}


def load_base_shapes(path: str | Path) -> BaseShapes:
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"no base shapes file at {path}")
    return shapes_from_json(json.loads(path.read_text()))
