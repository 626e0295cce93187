"""`build_model(ModelConfig, data) -> ModelHandle`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lowcarb.data.bundle import DataBundle
from lowcarb.models.byte_tokenizer import ByteTokenizer
from lowcarb.models.cnn import DigitsCNN
from lowcarb.models.config import BUILTIN_MODELS, ModelConfig
from lowcarb.models.handle import ModelHandle
from lowcarb.models.hf import load_hf_classifier, load_minilm_tokenizer, minilm_folder
from lowcarb.models.mlp import MLP
from lowcarb.models.transformer import TextTransformer


def build_reference_model(
    config: ModelConfig,
    num_labels: int,
    input_shape: tuple[int, ...] | None,
    tokenizer: Any | None = None,
) -> torch.nn.Module:
    """One of lowcarb's own models (cnn, mlp, transformer), freshly initialised."""
    if config.name == "cnn":
        if input_shape is None or len(input_shape) != 3:
            raise ValueError(f"model 'cnn' needs images (C, H, W), got input shape {input_shape}")
        c, h, w = input_shape
        return DigitsCNN((c, h, w), num_labels, config.channels, config.hidden_dim, config.dropout)
    if config.name == "mlp":
        if input_shape is None:
            raise ValueError("model 'mlp' needs fixed-size features (image data)")
        return MLP(input_shape, num_labels, config.hidden_dim, config.num_hidden_layers, config.dropout)
    if config.name == "transformer":
        tok = tokenizer if tokenizer is not None else ByteTokenizer()
        return TextTransformer(
            vocab_size=len(tok) if not isinstance(tok, ByteTokenizer) else tok.vocab_size,
            num_labels=num_labels,
            d_model=config.d_model,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            ffn_dim=config.ffn_dim,
            max_length=config.max_length,
            dropout=config.dropout,
            pad_token_id=tok.pad_token_id,
        )
    raise ValueError(f"{config.name!r} is not a reference model; use one of cnn, mlp, transformer")


def build_model(config: ModelConfig, data: DataBundle, seed: int | None = 0) -> ModelHandle:
    """A fresh (or pretrained, for Hugging Face folders) model sized for `data`.

    `seed` makes the initial weights (and a new classifier head) reproducible.
    """
    if seed is not None:
        torch.manual_seed(seed)
    name = config.name
    labels = tuple(data.label_names)
    if isinstance(name, str) and name in ("cnn", "mlp"):
        if data.kind != "image":
            raise ValueError(
                f"model {name!r} reads images but {data.name} is {data.kind} data; "
                "use model 'transformer' or 'minilm' (or a Hugging Face folder) for text"
            )
        shape = data.feature_shape
        model = build_reference_model(config, data.num_labels, shape)
        return ModelHandle(model, None, "image", name, config, data.num_labels, labels, shape)  # type: ignore[arg-type]
    if data.kind != "text":
        raise ValueError(
            f"model {str(name)!r} reads text but {data.name} is image data; use model 'cnn' or 'mlp'"
        )
    if name == "transformer":
        tokenizer = ByteTokenizer() if config.tokenizer == "bytes" else load_minilm_tokenizer()
        model = build_reference_model(config, data.num_labels, None, tokenizer)
        return ModelHandle(model, tokenizer, "text", "transformer", config, data.num_labels, labels)
    folder = minilm_folder() if name == "minilm" else Path(name)
    if isinstance(name, str) and name not in BUILTIN_MODELS and not folder.exists():
        raise ValueError(
            f"unknown model {name!r}: use one of {list(BUILTIN_MODELS)} or a path to a Hugging Face "
            "model folder (with config.json)"
        )
    model, tokenizer = load_hf_classifier(folder, data.num_labels, labels)
    return ModelHandle(model, tokenizer, "text", "hf", config, data.num_labels, labels)
