"""The embedded default: scikit-learn's 8x8 handwritten digits (ships with scikit-learn, offline)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as _sk_load_digits
from sklearn.model_selection import train_test_split

from lowcarb.data.bundle import DataBundle, ImageSplit
from lowcarb.data.labels import LabelMap

# The split is fixed (not the run's seed) so that every run on the default is comparable.
DIGITS_SPLIT_SEED = 0
DIGITS_DEV_FRACTION = 0.15
DIGITS_TEST_FRACTION = 0.15


def load_digits_bundle(max_train_examples: int | None = None, seed: int = 0) -> DataBundle:
    """1,797 images (1x8x8, scaled to [0, 1]), 10 classes, stratified 70/15/15 split."""
    digits = _sk_load_digits()
    x = (digits.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    idx = np.arange(len(y))
    rest, test_idx = train_test_split(
        idx, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=y
    )
    dev_share = DIGITS_DEV_FRACTION / (1.0 - DIGITS_TEST_FRACTION)
    train_idx, dev_idx = train_test_split(
        rest, test_size=dev_share, random_state=DIGITS_SPLIT_SEED, stratify=y[rest]
    )
    if max_train_examples is not None and max_train_examples < len(train_idx):
        rng = np.random.default_rng(seed)
        train_idx = np.sort(rng.choice(train_idx, size=max_train_examples, replace=False))

    def split(indices: np.ndarray) -> ImageSplit:
        return ImageSplit(torch.from_numpy(x[indices]), torch.from_numpy(y[indices]))

    return DataBundle(
        train=split(train_idx),
        dev=split(dev_idx),
        test=split(test_idx),
        label_map=LabelMap(names=tuple(str(i) for i in range(10)), numeric=True),
        kind="image",
        name="digits",
    )
