"""`load_data(DataConfig) -> DataBundle`: the one entry point of lowcarb.data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from lowcarb.data.bundle import DataBundle, TextSplit
from lowcarb.data.config import DataConfig
from lowcarb.data.digits import load_digits_bundle
from lowcarb.data.hf_datasets import is_datasets_folder, read_datasets_folder
from lowcarb.data.labels import LabelMap
from lowcarb.data.tables import RawColumns, TableChecks, read_table
from lowcarb.errors import DataError, MissingPathError


def load_data(config: DataConfig) -> DataBundle:
    if config.train is None:
        return load_digits_bundle(config.max_train_examples, config.seed)
    # Every file is checked to exist before any is read: a typo in dev is found at once.
    for name in ("train", "dev", "test"):
        path = getattr(config, name)
        if path is not None and not Path(path).exists():
            raise MissingPathError(f"data.{name} not found: {path}")
    train_path = Path(config.train)
    checks = TableChecks(config.allow_extra_fields, config.drop_unlabelled)
    if train_path.is_dir():
        if not is_datasets_folder(train_path):
            raise DataError(
                f"{train_path} is a folder but not a Hugging Face datasets folder "
                "(no dataset_dict.json or state.json); give a .tsv/.csv/.jsonl file or a "
                "folder written with save_to_disk"
            )
        raw = read_datasets_folder(train_path, config.text_column, config.label_column)
    else:
        raw = {"train": read_table(train_path, config.text_column, config.label_column, checks)}
    # Separate dev/test files override splits found in a datasets folder.
    for name in ("dev", "test"):
        path = getattr(config, name)
        if path is not None:
            raw[name] = _read_any(Path(path), config, checks)
    return _text_bundle(raw, config, name=train_path.name)


def _read_any(path: Path, config: DataConfig, checks: TableChecks) -> RawColumns:
    if path.is_dir() and is_datasets_folder(path):
        return read_datasets_folder(path, config.text_column, config.label_column)["train"]
    return read_table(path, config.text_column, config.label_column, checks)


def _seeded_split(
    labels: Sequence[int], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Stratified when every class has at least 2 examples, plain random otherwise."""
    idx = np.arange(len(labels))
    y = np.asarray(labels)
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 and len(y) * fraction >= len(counts[counts > 0]) else None
    keep, taken = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    return sorted(keep.tolist()), sorted(taken.tolist())


def _text_bundle(raw: dict[str, RawColumns], config: DataConfig, name: str) -> DataBundle:
    train_raw = raw["train"]
    label_map = LabelMap.build(train_raw.labels)

    if label_map.num_labels < 2:
        raise DataError(
            f"{train_raw.source}: every row has label {label_map.names[0]!r} in column "
            f"{train_raw.label_column!r}; a classifier needs at least two classes (is it the "
            "right label column? set data.label_column)"
        )

    def encode(columns: RawColumns) -> TextSplit:
        for index, lab in enumerate(columns.labels):
            if lab not in label_map:
                raise DataError(
                    f"{columns.where(index)}: label {lab!r} (column "
                    f"{columns.label_column!r}) never occurs in the training data "
                    f"{train_raw.source}; training labels are {list(label_map.names)}"
                )
        return TextSplit(columns.texts, tuple(label_map.encode_all(columns.labels)), columns.source)

    train = encode(train_raw)
    if len(train) < 2:
        raise DataError(f"{train_raw.source}: need at least 2 training examples, got {len(train)}")
    dev = encode(raw["dev"]) if "dev" in raw else None
    test = encode(raw["test"]) if "test" in raw else None
    # Carve what is missing out of train, with the run's seed, test first so that adding a dev
    # file later does not change the test set.
    if test is None and config.test_fraction > 0:
        keep, taken = _seeded_split(train.labels, config.test_fraction, config.seed)
        train, test = train.subset(keep), train.subset(taken)
    if dev is None:
        if config.dev_fraction <= 0:
            raise DataError(
                f"{train_raw.source}: no dev data; give data.dev or set data.dev_fraction > 0"
            )
        share = config.dev_fraction / (1.0 - (config.test_fraction if "test" not in raw else 0.0))
        keep, taken = _seeded_split(train.labels, min(share, 0.5), config.seed + 1)
        train, dev = train.subset(keep), train.subset(taken)
    if config.max_train_examples is not None and config.max_train_examples < len(train):
        rng = np.random.default_rng(config.seed)
        chosen = np.sort(rng.choice(len(train), size=config.max_train_examples, replace=False))
        train = train.subset(chosen.tolist())
    return DataBundle(
        train=train,
        dev=dev,
        test=test,
        label_map=label_map,
        kind="text",
        name=name,
        max_length=config.max_length,
        group_by_length=config.group_by_length,
    )
