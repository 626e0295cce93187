"""`ModelHandle`: a model with the tokenizer it reads and what it needs to be rebuilt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from lowcarb.models.config import ModelConfig

ModelKind = Literal["image", "text"]


def kind_of(family: str) -> ModelKind:
    """The data a model family reads: images for the CNN and MLP, text for every other."""
    return "image" if family in ("cnn", "mlp") else "text"


@dataclass
class ModelHandle:
    """`kind` is the data the model reads ("image" or "text"), matching `DataBundle.kind`;
    `family` is how it was built ("cnn", "mlp", "transformer", "hf" for a classifier folder,
    "causal-lm" for a language model). `provenance` says where weights came from when quality
    figures need that caveat (for example "dequantized from a 4-bit GGUF")."""

    model: nn.Module
    tokenizer: Any | None
    kind: ModelKind
    family: Literal["cnn", "mlp", "transformer", "hf", "causal-lm"]
    config: ModelConfig
    num_labels: int
    label_names: tuple[str, ...] = ()
    input_shape: tuple[int, ...] | None = None  # image models only
    provenance: str | None = None
