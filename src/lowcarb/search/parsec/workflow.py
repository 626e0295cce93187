"""PARSEC or Weightless PARSEC on a data set, end to end: the space that fits the data, the search,
the retraining of the most probable architectures.

    config = ParsecRunConfig(space="cnn", method="weightless", score="synflow", iterations=20)
    result = run_parsec(load_data(DataConfig()), config, ledger=SearchLedger(carbon=carbon))
    result.best, result.prior.save("prior.json"), result.to_search_result()

`ParsecRunConfig` is also a recipe's `parsec:` section (`lowcarb parsec RECIPE`): every setting the
command line used to fix is here, with the same defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from lowcarb.data import DataBundle
from lowcarb.errors import ConfigError, DataError
from lowcarb.search.ledger import SearchLedger
from lowcarb.search.parsec import parsec, weightless
from lowcarb.search.parsec.parsec import ParsecConfig, ParsecResult
from lowcarb.search.parsec.scores import score_fn
from lowcarb.search.parsec.space import (
    CnnSpaceConfig,
    Space,
    TextSpaceConfig,
    cnn_space,
    text_space,
)
from lowcarb.search.parsec.weightless import WeightlessConfig
from lowcarb.train import TrainConfig

SpaceName = Literal["cnn", "text"]
Method = Literal["parsec", "weightless"]
# Per method: (iterations, architectures per iteration) when the config leaves them unset.
DEFAULT_BUDGET = {"parsec": (60, 4), "weightless": (20, 8)}


@dataclass(frozen=True)
class ParsecRunConfig:
    """One architecture search on a data set (a recipe's `parsec:` section).

    space: cnn (a cell of convolutions and pooling, image data) or text (embedding width, depth,
        conv/attention mixers, pooling; text data read with the byte tokenizer).
    method: parsec (shared weights trained while pi learns) or weightless (a training-free
        `score` at initialisation: naswot, synflow or gradnorm).
    iterations / samples: None takes the method's default (60 x 4 parsec, 20 x 8 weightless).
    top, epochs, batch_size, lr: how many of the most probable architectures are retrained from
        scratch at the end, and how.
    warm_start: a prior.json saved by an earlier search (a smaller proxy search, for example).
    """

    space: SpaceName = "cnn"
    method: Method = "parsec"
    score: str = "naswot"
    iterations: int | None = None
    samples: int | None = None
    top: int = 3
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    warm_start: str | None = None

    def __post_init__(self) -> None:
        if self.space not in ("cnn", "text"):
            raise ConfigError(f"parsec.space must be cnn or text, got {self.space!r}")
        if self.method not in DEFAULT_BUDGET:
            raise ConfigError(f"parsec.method must be parsec or weightless, got {self.method!r}")
        score_fn(self.score)  # an unknown score fails here, with the list of scores
        for name in ("iterations", "samples", "top", "epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"parsec.{name} must be >= 1, got {value}")
        if not self.lr > 0:
            raise ConfigError(f"parsec.lr must be > 0, got {self.lr}")

    def search_config(self) -> ParsecConfig | WeightlessConfig:
        """The method's own config: budget, retraining and warm start."""
        iterations, samples = DEFAULT_BUDGET[self.method]
        iterations = self.iterations or iterations
        common: dict[str, Any] = {
            "iterations": iterations,
            "samples": self.samples or samples,
            "top": self.top,
            "retrain": TrainConfig(
                epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed, quiet=True
            ),
            "seed": self.seed,
            "warm_start": self.warm_start,
        }
        if self.method == "weightless":
            return WeightlessConfig(score=self.score, **common)
        # The warm-up (pi frozen while shared weights train) stays a fifth of the search at most.
        warmup = min(ParsecConfig.warmup_iterations, iterations // 5)
        return ParsecConfig(**common, warmup_iterations=warmup)


def parsec_space(data: DataBundle, config: ParsecRunConfig, max_length: int) -> tuple[Space, Any]:
    """The search space for `data` and the tokenizer its models read (None for images)."""
    if config.space == "cnn":
        if data.kind != "image":
            raise DataError(
                "parsec space cnn needs image data (the default digits); use space text "
                "(--space text) for text data"
            )
        c, h, w = data.feature_shape  # images are (channels, height, width)
        space = cnn_space(CnnSpaceConfig(input_shape=(c, h, w), num_labels=data.num_labels))
        return space, None
    if data.kind != "text":
        raise DataError(
            "parsec space text needs text data: give a recipe whose data: names a .tsv/.csv/.jsonl"
        )
    from lowcarb.models.byte_tokenizer import VOCAB_SIZE, ByteTokenizer

    space = text_space(
        TextSpaceConfig(vocab_size=VOCAB_SIZE, num_labels=data.num_labels, max_length=max_length)
    )
    return space, ByteTokenizer()


def run_parsec(
    data: DataBundle,
    config: ParsecRunConfig,
    *,
    max_length: int = 128,
    ledger: SearchLedger | None = None,
    progress: Callable[[str], None] | None = None,
    device: torch.device | str | None = None,
    precision: str = "fp32",
) -> ParsecResult:
    """Search the space that fits `data` with the configured method; retrain the best.
    max_length: tokens per text (the recipe's data.max_length); ledger: where windows go;
    device: where every architecture is built, trained and scored (None: the CPU); precision:
    the retraining's (the shared-weight steps and the training-free scores stay fp32: their
    log-likelihoods and log-determinants are what the search compares)."""
    space, tokenizer = parsec_space(data, config, max_length)
    if device is not None:
        space = space.on(device)
    search_config = config.search_config()
    search_config = replace(search_config, retrain=replace(search_config.retrain, precision=precision))
    if isinstance(search_config, WeightlessConfig):
        return weightless.search(
            space, data, search_config, tokenizer=tokenizer, progress=progress, ledger=ledger
        )
    return parsec.search(
        space, data, search_config, tokenizer=tokenizer, progress=progress, ledger=ledger
    )
