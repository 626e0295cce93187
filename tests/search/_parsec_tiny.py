"""Tiny spaces and data shared by the PARSEC tests (seconds, one thread)."""

from __future__ import annotations

import functools

import torch

from lowcarb.data import DataConfig, load_data
from lowcarb.search.parsec import CnnSpaceConfig, TextSpaceConfig, cnn_space, text_space
from lowcarb.train import TrainConfig

TINY_CNN = CnnSpaceConfig(channels=4, nodes=2, cells=1)
TINY_TEXT = TextSpaceConfig(widths=(8, 16), layers=(1, 2), max_length=16)
TINY_RETRAIN = TrainConfig(epochs=1, max_steps=2, batch_size=16, quiet=True)


def tiny_cnn():
    return cnn_space(TINY_CNN)


def tiny_text():
    return text_space(TINY_TEXT)


@functools.cache  # read-only in the tests: load once
def digits():
    return load_data(DataConfig(seed=0))


def image_batch(n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(n, 1, 8, 8, generator=g), "labels": torch.arange(n) % 10}


def text_batch(n: int = 5) -> dict[str, torch.Tensor]:
    from lowcarb.models.byte_tokenizer import ByteTokenizer

    texts = ["a fine film", "dull", "", "not bad at all, really", "x" * 40][:n]
    batch = dict(ByteTokenizer()(texts, max_length=16))
    batch["labels"] = torch.arange(len(texts)) % 2
    return batch
