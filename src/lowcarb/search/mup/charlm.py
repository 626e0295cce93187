"""A character-level language-modelling task for the width-parametrized LM (muTransfer's testbed).

Text in, one long stream of character ids out; training samples random windows from the stream
with a seeded generator, so every width and every learning rate sees exactly the same batches.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lowcarb.errors import ConfigError, DataError, MissingPathError
from lowcarb.search.mup.optim import optimizer
from lowcarb.train.batches import model_device

UNK = "\x00"  # id 0: characters of the validation text never seen in training


@dataclass(frozen=True)
class CharCorpus:
    vocab: tuple[str, ...]
    train: torch.Tensor  # (n_train_chars,) int64
    val: torch.Tensor  # (n_val_chars,) int64

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def read_texts(
    path: str | Path, column: str = "text", limit: int | None = None, seed: int = 0
) -> list[str]:
    """Lines of a .txt file, or one column of a .tsv/.csv with a header (a fixed-seed subset of
    `limit` rows when given)."""
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"no text file at {path}")
    if path.suffix in (".tsv", ".csv"):
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(
                f, delimiter="\t" if path.suffix == ".tsv" else ",", quoting=csv.QUOTE_NONE
            )
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise DataError(
                    f"{path} has no column {column!r} (columns: {reader.fieldnames}); "
                    "name the text column"
                )
            texts = [row[column].strip() for row in reader if row.get(column)]
    else:
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    texts = [t for t in texts if t]
    if not texts:
        raise DataError(f"{path} holds no text")
    if limit is not None and limit < len(texts):
        texts = random.Random(seed).sample(texts, limit)
    return texts


def corpus_from_files(
    text: str | Path,
    val_text: str | Path | None = None,
    column: str = "text",
    limit: int | None = None,
) -> CharCorpus:
    """The corpus of a text file (a .txt, or one column of a .tsv/.csv); the validation text is
    `val_text`, else a fixed tenth of the training lines (seeded, so every run holds out the
    same lines). `limit` keeps a fixed-seed subset of the training lines."""
    train_texts = read_texts(text, column, limit)
    if val_text is not None:
        val_texts = read_texts(val_text, column)
    else:
        random.Random(0).shuffle(train_texts)
        cut = max(1, len(train_texts) // 10)
        val_texts, train_texts = train_texts[:cut], train_texts[cut:]
    return build_corpus(train_texts, val_texts)


def build_corpus(train_texts: Sequence[str], val_texts: Sequence[str]) -> CharCorpus:
    """Vocabulary from the training text (plus UNK); texts joined by newlines."""
    train = "\n".join(train_texts) + "\n"
    val = "\n".join(val_texts) + "\n"
    vocab = (UNK, *sorted(set(train) - {UNK}))
    index = {c: i for i, c in enumerate(vocab)}
    return CharCorpus(
        vocab=vocab,
        train=torch.tensor([index[c] for c in train], dtype=torch.long),
        val=torch.tensor([index.get(c, 0) for c in val], dtype=torch.long),
    )


@dataclass(frozen=True)
class LMTrainConfig:
    """Short LM training: linear warm-up, then cosine decay to 10 % of the peak lr. No gradient
    clipping: a global-norm clip couples the widths' update sizes and would blur the comparison."""

    lr: float = 1e-2
    steps: int = 200
    batch_size: int = 16
    seq_len: int = 32
    warmup_frac: float = 0.1
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    eval_windows: int = 256
    data_seed: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.steps < 1 or self.batch_size < 1 or self.seq_len < 2:
            raise ConfigError("lr, steps, batch_size must be positive and seq_len at least 2")
        if not 0 <= self.warmup_frac < 1:
            raise ConfigError("warmup_frac must be in [0, 1)")


@dataclass(frozen=True)
class LMOutcome:
    val_loss: float  # nats per character; math.inf when training diverged
    train_loss: float  # mean over the last 10 % of steps
    diverged: bool
    steps_done: int


def _windows(stream: torch.Tensor, starts: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(len(starts), seq_len + 1) windows of the stream: inputs plus the next character."""
    return stream[starts[:, None] + torch.arange(seq_len + 1)]


def _lr_factor(step: int, cfg: LMTrainConfig) -> float:
    warm = max(1, int(cfg.warmup_frac * cfg.steps))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, cfg.steps - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate_lm(model: nn.Module, corpus: CharCorpus, cfg: LMTrainConfig) -> float:
    """Mean next-character cross-entropy on fixed, evenly spaced validation windows."""
    n = len(corpus.val) - cfg.seq_len - 1
    if n <= 0:
        raise DataError(f"validation text shorter than seq_len={cfg.seq_len}")
    starts = torch.linspace(0, n, steps=min(cfg.eval_windows, n + 1)).long()
    model.eval()
    device = model_device(model)
    total, count = 0.0, 0
    for chunk in starts.split(64):
        w = _windows(corpus.val, chunk, cfg.seq_len).to(device)
        logits = model(w[:, :-1])
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum"
        ).item()
        count += w[:, 1:].numel()
    model.train()
    return total / count


def train_lm(model: nn.Module, corpus: CharCorpus, cfg: LMTrainConfig) -> LMOutcome:
    """Train with muP (or SP, per the model's config) parameter groups; evaluate on val."""
    # fused AdamW: the default CPU implementation loops over parameters in Python, which at small
    # widths costs more than the arithmetic; fused keeps the measured cost close to the model's.
    extra: dict[str, Any] = {"fused": True} if cfg.optimizer in ("adam", "adamw") else {}
    opt = optimizer(model, cfg.optimizer, cfg.lr, weight_decay=cfg.weight_decay, **extra)
    base_lrs = [g["lr"] for g in opt.param_groups]
    n = len(corpus.train) - cfg.seq_len - 1
    if n <= 0:
        raise DataError(f"training text shorter than seq_len={cfg.seq_len}")
    gen = torch.Generator().manual_seed(cfg.data_seed)  # on the host: the same batches anywhere
    device = model_device(model)
    tail: list[float] = []
    model.train()
    for step in range(cfg.steps):
        f = _lr_factor(step, cfg)
        for g, base in zip(opt.param_groups, base_lrs, strict=True):
            g["lr"] = base * f
        w = _windows(
            corpus.train, torch.randint(0, n, (cfg.batch_size,), generator=gen), cfg.seq_len
        ).to(device, non_blocking=True)
        logits = model(w[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
        value = loss.item()
        # A loss far above uniform guessing (log vocab) will not come back: stop and say so.
        if not math.isfinite(value) or value > 3 * math.log(corpus.vocab_size) + 10:
            return LMOutcome(math.inf, math.inf, True, step + 1)
        if step >= cfg.steps - max(1, cfg.steps // 10):
            tail.append(value)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    val = evaluate_lm(model, corpus, cfg)
    if not math.isfinite(val):
        return LMOutcome(math.inf, sum(tail) / len(tail), True, cfg.steps)
    return LMOutcome(val, sum(tail) / len(tail), False, cfg.steps)
