"""`load_lm_data(DataConfig) -> LMBundle`: data for the causal-LM task.

    bundle = load_lm_data(DataConfig(train="chat.jsonl", max_length=256))
    loader = bundle.loader("train", 8, shuffle=True, tokenizer=handle.tokenizer)   # length-bucketed
    examples = bundle.encoded("dev", handle.tokenizer)    # prompts + references for exact match

`data.train=None` is the task lowcarb generates (lowcarb.data.lm_generated), as digits is for
classification. A missing dev or test file is carved out of train with a seeded random split
(`data.dev_fraction`, `data.test_fraction`). Rows are read and checked when the bundle is loaded
(before any model); they are tokenized the first time a loader asks, once per split and tokenizer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from lowcarb.data.bundle import LengthGroupedBatchSampler
from lowcarb.data.config import DataConfig
from lowcarb.data.lm_encode import EncodedSplit, collate_training, encode_split
from lowcarb.data.lm_generated import GENERATED_NAME, generated_splits
from lowcarb.data.lm_rows import Chat, LMSplit, PromptResponse, read_lm_file
from lowcarb.errors import DataError

SplitName = Literal["train", "dev", "test"]


class _Indices(torch.utils.data.Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


@dataclass(frozen=True)
class LMBundle:
    """Train/dev/test rows for a causal LM. `test` is None when there is no test data."""

    train: LMSplit
    dev: LMSplit
    test: LMSplit | None
    name: str
    max_length: int = 128
    prompt_format: str = "auto"
    # The default for shuffled loaders (DataConfig.group_by_length): rows of similar length share
    # a batch, so right padding wastes little compute.
    group_by_length: bool = True
    kind: Literal["lm"] = "lm"
    # (split, id(tokenizer)) -> (tokenizer, encoded); the tokenizer is kept so its id stays unique.
    _encoded: dict[tuple[str, int], tuple[Any, EncodedSplit]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def split(self, name: SplitName) -> LMSplit:
        if name in ("train", "dev"):
            return getattr(self, name)
        if name == "test":
            if self.test is None:
                raise DataError(f"{self.name} has no test split: give data.test or set data.test_fraction > 0")
            return self.test
        raise DataError(f"unknown split {name!r}; use 'train', 'dev' or 'test'")

    def encoded(self, split: SplitName, tokenizer: Any) -> EncodedSplit:
        """The split tokenized for `tokenizer` (cached: a run encodes each split once)."""
        if tokenizer is None:
            raise DataError("causal-lm data needs the model's tokenizer: pass tokenizer=handle.tokenizer")
        key = (split, id(tokenizer))
        if key not in self._encoded:
            encoded = encode_split(self.split(split), tokenizer, self.max_length, self.prompt_format)
            if encoded.dropped:
                warnings.warn(
                    f"{encoded.source}: {encoded.dropped} of {len(self.split(split))} rows have no "
                    f"response token within data.max_length={self.max_length} and are left out; "
                    "raise data.max_length to keep them",
                    stacklevel=2,
                )
            self._encoded[key] = (tokenizer, encoded)
        return self._encoded[key][1]

    def loader(
        self,
        split: SplitName,
        batch_size: int,
        shuffle: bool = False,
        tokenizer: Any | None = None,
        seed: int = 0,
        group_by_length: bool | None = None,
        pin_memory: bool = False,
    ) -> DataLoader[Any]:
        """Batches of `split`; shuffled ones are length-bucketed (similar lengths share a batch).
        `pin_memory` for a GPU run (`Placement.pin_memory`: asynchronous copies to the device)."""
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        examples = self.encoded(split, tokenizer).examples
        assert tokenizer is not None  # encoded() refused a missing one with a DataError
        pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)

        def collate(indices: list[int]) -> dict[str, torch.Tensor]:
            return collate_training([examples[i] for i in indices], pad_id)

        if group_by_length is None:
            group_by_length = self.group_by_length
        if shuffle and group_by_length:
            lengths = [len(e.input_ids) for e in examples]
            sampler = LengthGroupedBatchSampler(lengths, batch_size, torch.Generator().manual_seed(seed))
            return DataLoader(
                _Indices(len(examples)), batch_sampler=sampler, collate_fn=collate, pin_memory=pin_memory
            )
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(
            _Indices(len(examples)), batch_size=batch_size, shuffle=shuffle, generator=generator,
            collate_fn=collate, pin_memory=pin_memory,
        )  # fmt: skip

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "dev": len(self.dev), "test": 0 if self.test is None else len(self.test)}

    @property
    def texts(self) -> tuple[str, ...]:
        """The training rows as text (prompt + response, or the conversation), e.g. for a vocabulary."""
        out = []
        for row in self.train.rows:
            if isinstance(row, PromptResponse):
                out.append(f"{row.prompt} {row.response}")
            elif isinstance(row, Chat):
                out.append(" ".join(content for _, content in row.messages))
            else:
                out.append(row.text)
        return tuple(out)


def load_lm_data(config: DataConfig) -> LMBundle:
    """Read and split causal-LM data (DataError names the file, line and field of a bad row)."""
    dev: LMSplit | None
    test: LMSplit | None
    if config.train is None:
        splits = generated_splits(config.seed)
        train, dev, test = splits["train"], splits["dev"], splits["test"]
        name = GENERATED_NAME
    else:
        train = read_lm_file(config.train, config.text_column)
        dev = read_lm_file(config.dev, config.text_column) if config.dev is not None else None
        test = read_lm_file(config.test, config.text_column) if config.test is not None else None
        # Test first, so adding a dev file later does not change the test set.
        if test is None and config.test_fraction > 0:
            train, test = _seeded_split(train, config.test_fraction, config.seed)
        if dev is None:
            if config.dev_fraction <= 0:
                raise DataError(f"{train.source}: no dev data; give data.dev or set data.dev_fraction > 0")
            share = config.dev_fraction / (1.0 - (config.test_fraction if config.test is None else 0.0))
            train, dev = _seeded_split(train, min(share, 0.5), config.seed + 1)
        name = Path(config.train).name
    if config.max_train_examples is not None and config.max_train_examples < len(train):
        rng = np.random.default_rng(config.seed)
        train = train.subset(np.sort(rng.choice(len(train), config.max_train_examples, replace=False)).tolist())
    return LMBundle(train, dev, test, name, config.max_length, config.prompt_format, config.group_by_length)


def _seeded_split(split: LMSplit, fraction: float, seed: int) -> tuple[LMSplit, LMSplit]:
    n = len(split)
    taken = max(1, int(round(n * fraction)))
    if n - taken < 1:
        raise DataError(f"{split.source}: {n} rows are too few to hold out a {fraction:.0%} split; add rows")
    order = np.random.default_rng(seed).permutation(n)
    return split.subset(sorted(order[taken:].tolist())), split.subset(sorted(order[:taken].tolist()))
