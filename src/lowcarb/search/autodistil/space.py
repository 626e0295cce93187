"""The student space under a BERT-style teacher, its split into sub-spaces, and FLOPs per student.

A student is a `SubnetConfig`: layers, hidden size, attention heads, FFN size. The space takes
each dimension from a few evenly spaced fractions of the teacher's value; `split_space` cuts the
sorted choices of layers, hidden size and FFN size into K contiguous ranges and pairs range i of
each (AutoDistil's diagonal blocks: tiny students share weights with tiny ones, base with base),
so every sub-space is a small box with its own weight-sharing supernet.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lowcarb.errors import ConfigError, ModelError


@dataclass(frozen=True, order=True)
class SubnetConfig:
    """One student: the leading `num_layers` blocks, `hidden_size` units, `intermediate_size`
    FFN neurons; `num_heads` splits the attention width (= hidden size) into heads."""

    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "num_heads", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SubnetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden size {self.hidden_size} is not divisible by {self.num_heads} heads: "
                "pick heads that divide the hidden size"
            )

    @property
    def key(self) -> str:
        return f"L{self.num_layers}-H{self.hidden_size}-A{self.num_heads}-F{self.intermediate_size}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def within(self, other: SubnetConfig) -> bool:
        """True when this student is a leading slice of `other` (no dimension larger)."""
        return (
            self.num_layers <= other.num_layers
            and self.hidden_size <= other.hidden_size
            and self.intermediate_size <= other.intermediate_size
        )


@dataclass(frozen=True)
class TeacherShape:
    """The sizes of a BERT-style teacher that matter for the space and for FLOPs."""

    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    num_labels: int

    @classmethod
    def of(cls, model: Any) -> TeacherShape:
        config = getattr(model, "config", model)
        needed = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
        missing = [n for n in needed if not hasattr(config, n)]
        if missing:
            raise ModelError(
                f"AutoDistil needs a Hugging Face BERT-style teacher (its config lacks {missing}); "
                "load the teacher with lowcarb.models (\"minilm\" or a BERT folder)"
            )
        return cls(
            num_layers=int(config.num_hidden_layers),
            hidden_size=int(config.hidden_size),
            num_heads=int(config.num_attention_heads),
            intermediate_size=int(config.intermediate_size),
            num_labels=int(getattr(config, "num_labels", 2)),
        )

    @property
    def config(self) -> SubnetConfig:
        return SubnetConfig(self.num_layers, self.hidden_size, self.num_heads, self.intermediate_size)


@dataclass(frozen=True)
class StudentSpace:
    """Choices per dimension; `configs()` is their product, minus head counts that do not divide
    the hidden size or widths the relation heads do not divide."""

    layers: tuple[int, ...]
    hidden_sizes: tuple[int, ...]
    num_heads: tuple[int, ...]
    intermediate_sizes: tuple[int, ...]
    relation_heads: int = 1

    def __post_init__(self) -> None:
        for name in ("layers", "hidden_sizes", "num_heads", "intermediate_sizes"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                raise ConfigError(f"StudentSpace.{name} must list positive sizes, got {values}")

    def configs(self) -> tuple[SubnetConfig, ...]:
        out = []
        for layers, hidden, heads, ffn in itertools.product(
            sorted(set(self.layers)), sorted(set(self.hidden_sizes)),
            sorted(set(self.num_heads)), sorted(set(self.intermediate_sizes)),
        ):
            if hidden % heads or hidden % self.relation_heads:
                continue
            out.append(SubnetConfig(layers, hidden, heads, ffn))
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def student_space(
    teacher: Any,
    *,
    choices_per_subspace: int = 2,
    subspaces: int = 3,
    relation_heads: int | None = None,
) -> StudentSpace:
    """The default space under `teacher` (a model or its config).

    Layers: 1 .. teacher layers. Hidden and FFN sizes: `subspaces * choices_per_subspace` evenly
    spaced values from 3/8 (hidden) or 1/6 (FFN) of the teacher's size up to it, hidden sizes
    rounded to a multiple of the relation heads and of every head count. Heads: the teacher's
    count and half of it. For MiniLM L6-H384-A12-F1536 with 3 sub-spaces: hidden 144..384 in steps
    of 48, FFN 256..1536 in steps of 256, heads 6 or 12, layers 1..6.
    """
    shape = teacher if isinstance(teacher, TeacherShape) else TeacherShape.of(teacher)
    if subspaces < 1 or choices_per_subspace < 1:
        raise ConfigError(f"subspaces and choices_per_subspace must be >= 1 (got {subspaces}, "
                         f"{choices_per_subspace})")
    count = subspaces * choices_per_subspace
    relation = relation_heads or shape.num_heads
    heads = tuple(sorted({h for h in (shape.num_heads // 2, shape.num_heads) if h >= 1}))
    multiple = math.lcm(relation, *heads)
    if shape.hidden_size % multiple:
        raise ModelError(
            f"teacher hidden size {shape.hidden_size} is not a multiple of {multiple} (the relation "
            f"heads {relation} and head counts {heads}); pick relation_heads dividing it"
        )
    # Fractions 3/8 .. 1 of the teacher's width (1 alone when there is a single choice).
    fractions = [1.0] if count == 1 else [(3 + 5 * i / (count - 1)) / 8 for i in range(count)]
    hidden = tuple(sorted({
        max(multiple, int(shape.hidden_size * f) // multiple * multiple) for f in fractions
    }))
    ffn = tuple(sorted({
        max(1, shape.intermediate_size * (i + 1) // count) for i in range(count)
    }))
    if len(set(range(1, shape.num_layers + 1))) < subspaces:
        raise ConfigError(
            f"a teacher with {shape.num_layers} layers cannot be split into {subspaces} sub-spaces "
            "by depth; use fewer sub-spaces"
        )
    return StudentSpace(
        layers=tuple(range(1, shape.num_layers + 1)),
        hidden_sizes=hidden,
        num_heads=heads,
        intermediate_sizes=ffn,
        relation_heads=relation,
    )


@dataclass(frozen=True)
class SubSpace:
    """A box of the space served by one supernet, whose size is `largest`."""

    name: str
    configs: tuple[SubnetConfig, ...]

    @property
    def largest(self) -> SubnetConfig:
        hidden = max(c.hidden_size for c in self.configs)
        return SubnetConfig(
            max(c.num_layers for c in self.configs),
            hidden,
            max(c.num_heads for c in self.configs if hidden % c.num_heads == 0),
            max(c.intermediate_size for c in self.configs),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "largest": self.largest.to_dict(),
                "configs": [c.key for c in self.configs]}


SUBSPACE_NAMES = {1: ("base",), 2: ("small", "base"), 3: ("tiny", "small", "base")}


def _chunks(values: Sequence[int], k: int, what: str) -> list[tuple[int, ...]]:
    ordered = sorted(set(values))
    if len(ordered) < k:
        raise ConfigError(
            f"cannot split {len(ordered)} {what} choices {ordered} into {k} sub-spaces; "
            f"give at least {k} {what} choices or use fewer sub-spaces"
        )
    return [tuple(int(v) for v in chunk) for chunk in np.array_split(np.array(ordered), k)]


def split_space(space: StudentSpace, k: int = 3) -> tuple[SubSpace, ...]:
    """K sub-spaces, smallest first (named tiny, small, base for K = 3): sub-space i takes the
    i-th contiguous range of the layer, hidden and FFN choices, and every head count."""
    if k < 1:
        raise ConfigError(f"the number of sub-spaces must be >= 1, got {k}")
    layers = _chunks(space.layers, k, "layer")
    hidden = _chunks(space.hidden_sizes, k, "hidden size")
    ffn = _chunks(space.intermediate_sizes, k, "FFN size")
    names = SUBSPACE_NAMES.get(k, tuple(f"subspace-{i}" for i in range(k)))
    out = []
    for i in range(k):
        box = StudentSpace(layers[i], hidden[i], space.num_heads, ffn[i], space.relation_heads)
        configs = box.configs()
        if not configs:
            raise ConfigError(
                f"sub-space {names[i]} holds no valid student (hidden {hidden[i]} vs heads "
                f"{space.num_heads}, relation heads {space.relation_heads}); change the space"
            )
        out.append(SubSpace(names[i], configs))
    return tuple(out)


def subnet_flops(config: SubnetConfig, seq_len: int, num_labels: int = 2) -> float:
    """Forward FLOPs per example of a BERT sequence classifier with `seq_len` tokens (a
    multiply-add counts 2; matrix multiplies and attention only, as `lowcarb.train`'s counter).

    Per block: Q, K, V and output projections 8 T h^2, attention scores and mixing 4 T^2 h,
    FFN 4 T h f; then the pooler (2 h^2, first token only) and the classifier (2 h C).
    """
    if seq_len < 1:
        raise ConfigError(f"seq_len must be >= 1 token, got {seq_len}")
    t, h, f = seq_len, config.hidden_size, config.intermediate_size
    block = 8 * t * h * h + 4 * t * t * h + 4 * t * h * f
    return float(config.num_layers * block + 2 * h * h + 2 * h * num_labels)
