"""Training one architecture from scratch, data plumbing shared by PARSEC and Weightless PARSEC."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from lowcarb.data import DataBundle
from lowcarb.errors import DataError
from lowcarb.search.parsec.space import Architecture, Space, arch_key
from lowcarb.train import TrainConfig, count_parameters, evaluate, fit, set_seed

Split = Literal["train", "dev", "test"]


@dataclass(frozen=True)
class Candidate:
    """An architecture retrained from scratch and evaluated (dev picks, test reports)."""

    arch: Architecture
    log_prob: float
    dev_accuracy: float
    test_accuracy: float | None
    params: int
    steps: int
    footprint: dict[str, Any] | None = None  # its retraining window (search.result.window_summary)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": arch_key(self.arch)}


def check_data(space: Space, data: DataBundle, tokenizer: Any) -> None:
    if data.kind != space.input_kind:
        raise DataError(
            f"space {space.name!r} reads {space.input_kind} data but the data is {data.kind}; "
            f"use --space {'text' if data.kind == 'text' else 'cnn'} (or a matching data set)"
        )
    if data.kind == "text" and tokenizer is None:
        raise DataError(
            "text data needs a tokenizer (lowcarb.models.byte_tokenizer.ByteTokenizer)"
        )


def cycle(
    data: DataBundle, split: Split, batch_size: int, tokenizer: Any, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of a split forever (reshuffled every pass for train)."""
    epoch = 0
    while True:
        loader = data.loader(split, batch_size, shuffle=True, tokenizer=tokenizer, seed=seed + epoch)
        yield from loader
        epoch += 1


def train_architecture(
    space: Space,
    arch: Architecture,
    data: DataBundle,
    config: TrainConfig,
    tokenizer: Any = None,
    log_prob: float = 0.0,
) -> tuple[Candidate, nn.Module]:
    """Build `arch` with fresh weights (seeded), train it with `fit`, evaluate dev and test."""
    set_seed(config.seed)
    model = space.build(arch).model
    train_loader = data.loader(
        "train", config.batch_size, shuffle=True, tokenizer=tokenizer, seed=config.seed
    )
    result = fit(model, train_loader, None, config)
    dev = evaluate(model, data.loader("dev", 256, tokenizer=tokenizer))["accuracy"]
    test = None
    if data.test is not None:
        test = evaluate(model, data.loader("test", 256, tokenizer=tokenizer))["accuracy"]
    cand = Candidate(
        dict(arch),
        log_prob,
        float(dev),
        None if test is None else float(test),
        count_parameters(model),
        result.steps,
    )
    return cand, model
