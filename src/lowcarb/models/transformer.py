"""A small transformer encoder for text classification (pre-norm, learned positions, mean pooling)."""

from __future__ import annotations

import torch
from torch import nn


class TextTransformer(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_labels: int,
        d_model: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        ffn_dim: int = 256,
        max_length: int = 128,
        dropout: float = 0.1,
        pad_token_id: int = 0,
    ) -> None:
        super().__init__()
        self.max_length = max_length
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_token_id)
        self.position = nn.Embedding(max_length, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            dim_feedforward=ffn_dim,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # enable_nested_tensor=False: the nested-tensor fast path changes output shapes with
        # padding and is not used with norm_first anyway.
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.classifier = nn.Linear(d_model, num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,  # accepted (MiniLM's tokenizer sends it), unused
    ) -> torch.Tensor:
        batch, length = input_ids.shape  # (B, T)
        if length > self.max_length:
            raise ValueError(
                f"input has {length} tokens but the model was built for max_length={self.max_length}; "
                "truncate the input (data.max_length) or build the model with a larger model.max_length"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = torch.arange(length, device=input_ids.device)
        h = self.embed(input_ids) + self.position(positions)[None]  # (B, T, D)
        h = self.encoder(h, src_key_padding_mask=attention_mask == 0)
        h = self.norm(h)
        mask = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
        return self.classifier(pooled)  # (B, num_labels)
