"""SST-2 for the language benchmarks: one fixed-seed training subset, the dev set, MiniLM loaders,
and the fine-tuned MiniLM baseline that compression, LoRA and distillation benchmarks start from.

    from _sst2 import load_baseline, dev_loader, train_loader, example_batches
    model, tokenizer = load_baseline(seed=1)    # run baseline_minilm_sst2.py first
    dev = dev_loader(tokenizer, batch_size=64)

Seeds: the training subset is always seed 0's 8,000 phrases; a *training* seed (head
initialisation, batch order) names each fine-tuned baseline, cached in
benchmarks/.cache/minilm-sst2/seed-<s>/. Every accuracy claim compares both arms over the same
training seeds (0, 1, 2 by default) and uses the means.

Data: GLUE SST-2 from ../shared/data/sst2 (override with LOWCARB_SST2_DIR). The subset is
`numpy.random.default_rng(seed).choice(67349, n, replace=False)` over train.tsv rows, sorted, as
`lowcarb.data.load_data(DataConfig(max_train_examples=n, seed=seed))` draws it. Texts are tokenised
by MiniLM's WordPiece tokenizer, truncated to MAX_LENGTH tokens, padded per batch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from lowcarb.data import DataBundle, DataConfig, TextSplit, load_data, make_loader

BENCH_DIR = Path(__file__).resolve().parent
SST2_DIR = Path(os.environ.get("LOWCARB_SST2_DIR", BENCH_DIR.parents[1] / "shared" / "data" / "sst2"))
CACHE_DIR = BENCH_DIR / ".cache" / "minilm-sst2"
MAX_LENGTH = 64
DEFAULT_N = 8000
DEFAULT_SEED = 0
DEFAULT_SEEDS = "0,1,2"


def _check_data() -> None:
    for name in ("train.tsv", "dev.tsv"):
        if not (SST2_DIR / name).exists():
            raise FileNotFoundError(
                f"SST-2 file {SST2_DIR / name} not found; set LOWCARB_SST2_DIR to the folder "
                "holding train.tsv and dev.tsv"
            )


_BUNDLES: dict[tuple[int, int], DataBundle] = {}


def sst2_bundle(n: int = DEFAULT_N, seed: int = DEFAULT_SEED) -> DataBundle:
    """Train = the fixed-seed subset of n phrases, dev = the 872 dev sentences, no test split."""
    key = (n, seed)
    if key not in _BUNDLES:
        _check_data()
        _BUNDLES[key] = load_data(
            DataConfig(
                train=SST2_DIR / "train.tsv",
                dev=SST2_DIR / "dev.tsv",
                text_column="text",
                label_column="label",
                test_fraction=0.0,
                seed=seed,
                max_train_examples=n,
                max_length=MAX_LENGTH,
            )
        )
    return _BUNDLES[key]


def load_subset(n: int = DEFAULT_N, seed: int = DEFAULT_SEED) -> TextSplit:
    """The training subset: n phrases with labels 0 (negative) / 1 (positive)."""
    return sst2_bundle(n, seed).train  # type: ignore[return-value]


def load_dev() -> TextSplit:
    return sst2_bundle().dev  # type: ignore[return-value]


def heldout_split(n: int, min_words: int = 6, seed: int = 1000 + DEFAULT_SEED,
                  subset_n: int = DEFAULT_N) -> TextSplit:
    """`n` SST-2 train phrases outside the training subset, of >= min_words words (so that they
    read like sentences, not one-word fragments), drawn with `seed`: the split a benchmark chooses
    or stops on, since GLUE dev scores the claims and must not decide anything."""
    import numpy as np

    _check_data()
    full = load_data(DataConfig(train=SST2_DIR / "train.tsv", dev=SST2_DIR / "dev.tsv",
                                text_column="text", label_column="label", test_fraction=0.0))
    train: TextSplit = full.train  # type: ignore[assignment]
    subset_texts = set(load_subset(subset_n).texts)
    rest = [i for i, t in enumerate(train.texts) if t not in subset_texts and len(t.split()) >= min_words]
    if len(rest) < n:
        raise SystemExit(f"only {len(rest)} held-out SST-2 phrases of >= {min_words} words; ask for fewer (--dev-n, --stop-n)")
    pick = np.sort(np.random.default_rng(seed).choice(len(rest), size=n, replace=False))
    return train.subset([rest[i] for i in pick.tolist()])


def subset_digest(split: TextSplit) -> str:
    """sha256 over the subset's texts and labels, so a cached checkpoint names its data exactly."""
    h = hashlib.sha256()
    for text, label in zip(split.texts, split.labels, strict=True):
        h.update(f"{label}\t{text}\n".encode())
    return h.hexdigest()


def subset_description(n: int = DEFAULT_N, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    split = load_subset(n, seed)
    return {
        "source": "GLUE SST-2 train.tsv (../shared/data/sst2)",
        "n": len(split),
        "seed": seed,
        "selection": "numpy.random.default_rng(seed).choice(rows, n, replace=False), sorted",
        "positive_fraction": sum(split.labels) / len(split),
        "sha256": subset_digest(split),
        "max_length_tokens": MAX_LENGTH,
        "dev": "GLUE SST-2 dev.tsv, 872 sentences",
    }


def train_loader(
    tokenizer: Any,
    batch_size: int = 32,
    n: int = DEFAULT_N,
    seed: int = DEFAULT_SEED,
    shuffle: bool = True,
    group_by_length: bool = True,
    train_seed: int | None = None,
) -> DataLoader[Any]:
    """Seeded shuffled batches of the subset drawn with `seed`, in the order of `train_seed`
    (default: `seed`); similar-length phrases are batched together by default (SST-2 phrases
    run from 1 to 60 tokens, so random batches would be mostly padding)."""
    return make_loader(
        load_subset(n, seed),
        batch_size,
        shuffle=shuffle,
        tokenizer=tokenizer,
        max_length=MAX_LENGTH,
        seed=seed if train_seed is None else train_seed,
        group_by_length=group_by_length,
    )


def dev_loader(tokenizer: Any, batch_size: int = 64) -> DataLoader[Any]:
    return make_loader(load_dev(), batch_size, shuffle=False, tokenizer=tokenizer, max_length=MAX_LENGTH)


def example_batches(tokenizer: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Fixed batches of 1 and 32 dev sentences (the first ones) for latency and FLOPs."""
    dev = load_dev()
    b1 = next(iter(make_loader(dev.subset([0]), 1, tokenizer=tokenizer, max_length=MAX_LENGTH)))
    b32 = next(iter(make_loader(dev.subset(list(range(32))), 32, tokenizer=tokenizer, max_length=MAX_LENGTH)))
    return b1, b32


def baseline_dir(seed: int = DEFAULT_SEED) -> Path:
    """Where the baseline fine-tuned with training seed `seed` is cached."""
    return CACHE_DIR / f"seed-{seed}"


def load_baseline(seed: int = DEFAULT_SEED, folder: Path | None = None) -> tuple[torch.nn.Module, Any]:
    """The fine-tuned MiniLM of training seed `seed` (eval mode) and its tokenizer, from the cache."""
    folder = baseline_dir(seed) if folder is None else folder
    if not (folder / "config.json").exists() or not (folder / "model.safetensors").exists():
        raise FileNotFoundError(
            f"no fine-tuned MiniLM checkpoint in {folder}; run "
            f"`.venv/bin/python benchmarks/baseline_minilm_sst2.py --seeds {seed}` first "
            "(about 10 minutes per seed on 2 cores)"
        )
    from lowcarb.models import load_model

    handle = load_model(folder)
    handle.model.eval()
    return handle.model, handle.tokenizer


def baseline_metrics(seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """metrics.json of the cached baseline of training seed `seed` (dev accuracy, training figures)."""
    path = baseline_dir(seed) / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found; run benchmarks/baseline_minilm_sst2.py --seeds {seed} first"
        )
    return json.loads(path.read_text())


def baseline_accuracies(seeds: list[int]) -> list[float]:
    """Dev accuracy of the cached baseline of each training seed (the reference arm)."""
    return [float(baseline_metrics(s)["dev_after_training"]["accuracy"]) for s in seeds]
