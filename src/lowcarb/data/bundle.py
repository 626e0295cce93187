"""`DataBundle`: the loaded splits plus everything a model needs to know about them.

A batch is a `dict[str, Tensor]`: `"labels"` holds the targets and every other key is passed to
the model as a keyword argument (`pixel_values` for images; `input_ids`, `attention_mask`, ... for
text, as the tokenizer returns them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lowcarb.data.labels import LabelMap
from lowcarb.errors import DataError

Batch = dict[str, torch.Tensor]
# A tokenizer is anything called like a Hugging Face tokenizer:
# tokenizer(texts, padding=True, truncation=True, max_length=n, return_tensors="pt") -> mapping.
Tokenizer = Callable[..., Any]


@dataclass(frozen=True)
class ImageSplit:
    """Images as a float tensor (N, C, H, W) and class indices (N,)."""

    features: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.features.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"{self.features.shape[0]} images but {self.labels.shape[0]} labels"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: Sequence[int]) -> ImageSplit:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return ImageSplit(self.features[idx], self.labels[idx])


@dataclass(frozen=True)
class TextSplit:
    """Texts and class indices."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int]) -> TextSplit:
        return TextSplit(
            tuple(self.texts[i] for i in indices), tuple(self.labels[i] for i in indices), self.source
        )


Split = ImageSplit | TextSplit
SplitName = Literal["train", "dev", "test"]


class _IndexDataset(Dataset[int]):
    # The loader hands out indices; the collate function builds the batch, so text can be
    # tokenised per batch and padded only to the longest text in that batch (dynamic padding).
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar-length texts, so dynamic padding pads little.

    Each epoch: a seeded permutation is cut into windows of `batch_size x window_batches`
    examples, each window is sorted by length and cut into batches, and the batch order is
    shuffled. Padding (wasted compute) drops sharply while batches stay random across epochs;
    Hugging Face Trainer's `group_by_length` does the same.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, generator: torch.Generator, window_batches: int = 50
    ) -> None:
        self.lengths = torch.as_tensor(list(lengths))
        self.batch_size = batch_size
        self.generator = generator
        self.window = batch_size * window_batches

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(len(self.lengths), generator=self.generator)
        batches: list[list[int]] = []
        for start in range(0, len(perm), self.window):
            window = perm[start : start + self.window]
            window = window[torch.argsort(self.lengths[window], descending=True, stable=True)]
            batches += [window[i : i + self.batch_size].tolist() for i in range(0, len(window), self.batch_size)]
        for j in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[j]


def _image_collate(split: ImageSplit) -> Callable[[list[int]], Batch]:
    def collate(indices: list[int]) -> Batch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {"pixel_values": split.features[idx], "labels": split.labels[idx]}

    return collate


def _text_collate(split: TextSplit, tokenizer: Tokenizer, max_length: int) -> Callable[[list[int]], Batch]:
    def collate(indices: list[int]) -> Batch:
        texts = [split.texts[i] for i in indices]
        encoded = tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        batch: Batch = {key: value for key, value in dict(encoded).items()}
        batch["labels"] = torch.as_tensor([split.labels[i] for i in indices], dtype=torch.long)
        return batch

    return collate


def make_loader(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    tokenizer: Tokenizer | None = None,
    max_length: int = 128,
    seed: int = 0,
    group_by_length: bool = False,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """A DataLoader over one split (seeded shuffling, dynamic padding for text).

    `group_by_length` (text, with shuffle) batches texts of similar length together, which cuts
    the padding the model computes on (see LengthGroupedBatchSampler). `pin_memory` puts batches
    in page-locked memory, so that copying them to a GPU can overlap the GPU's work (set it for
    a GPU run: `Placement.pin_memory`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(split, TextSplit):
        if tokenizer is None:
            raise ValueError(
                "text data needs a tokenizer: pass tokenizer=handle.tokenizer from "
                "lowcarb.models.build_model(...)"
            )
        collate = _text_collate(split, tokenizer, max_length)
    else:
        collate = _image_collate(split)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    if group_by_length and shuffle and isinstance(split, TextSplit):
        # Character length is a good proxy for token length and needs no tokenisation pass.
        sampler = LengthGroupedBatchSampler([len(t) for t in split.texts], batch_size, generator)  # type: ignore[arg-type]
        return DataLoader(
            _IndexDataset(len(split)), batch_sampler=sampler, collate_fn=collate, pin_memory=pin_memory
        )
    return DataLoader(
        _IndexDataset(len(split)),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=collate,
        pin_memory=pin_memory,
    )


@dataclass(frozen=True)
class DataBundle:
    """Train/dev/test splits of one dataset. `test` is None when there is no test data."""

    train: Split
    dev: Split
    test: Split | None
    label_map: LabelMap
    kind: Literal["image", "text"]
    name: str
    max_length: int = 128
    # The default for shuffled text loaders (DataConfig.group_by_length).
    group_by_length: bool = False

    @property
    def num_labels(self) -> int:
        return self.label_map.num_labels

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.label_map.names

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one image (C, H, W); only for image data."""
        if not isinstance(self.train, ImageSplit):
            raise ValueError(f"{self.name} is text data; it has no fixed feature shape")
        return tuple(self.train.features.shape[1:])

    @property
    def texts(self) -> tuple[str, ...]:
        """Training texts (to build a vocabulary); only for text data."""
        if not isinstance(self.train, TextSplit):
            raise ValueError(f"{self.name} is image data; it has no texts")
        return self.train.texts

    def split(self, name: SplitName) -> Split:
        if name == "train":
            return self.train
        if name == "dev":
            return self.dev
        if name == "test":
            if self.test is None:
                raise DataError(
                    f"{self.name} has no test split: give data.test or set data.test_fraction > 0"
                )
            return self.test
        raise ValueError(f"unknown split {name!r}; use 'train', 'dev' or 'test'")

    def loader(
        self,
        split: SplitName,
        batch_size: int,
        shuffle: bool = False,
        tokenizer: Tokenizer | None = None,
        seed: int = 0,
        group_by_length: bool | None = None,
        pin_memory: bool = False,
    ) -> DataLoader[Any]:
        """`group_by_length=None` takes the bundle's setting (it only acts on shuffled text)."""
        if group_by_length is None:
            group_by_length = self.group_by_length
        return make_loader(
            self.split(split),
            batch_size,
            shuffle=shuffle,
            tokenizer=tokenizer,
            max_length=self.max_length,
            seed=seed,
            group_by_length=group_by_length,
            pin_memory=pin_memory,
        )

    def save_label_map(self, path: str | Path) -> Path:
        return self.label_map.save(path)

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "dev": len(self.dev),
            "test": 0 if self.test is None else len(self.test),
        }
