"""A tiny random BERT teacher and token batches for the AutoDistil tests."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification

VOCAB = 60


def tiny_teacher(seed: int = 0, layers: int = 3) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32, num_labels=2,
    )
    return BertForSequenceClassification(config).eval()


def batches(count: int, size: int = 4, length: int = 10, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """Token batches with some padding (the second row is cut short) and labels."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(1, VOCAB, (size, length), generator=gen)
        mask = torch.ones_like(ids)
        mask[1, length // 2:] = 0
        ids = ids * mask
        labels = torch.randint(0, 2, (size,), generator=gen)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out
