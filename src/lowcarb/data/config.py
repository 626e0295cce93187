"""`DataConfig`: which dataset to load and how to split it (typed; strings are parsed at the edge)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lowcarb.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from.

    Relative paths in a recipe file are relative to the recipe file's folder (the recipe loader
    resolves them); here, as everywhere in Python, they are relative to the working directory.

    `train=None` loads the embedded default (scikit-learn digits, a fixed-seed train/dev/test
    split). Otherwise `train` is a text table (`.tsv`, `.csv`, `.jsonl`) or a folder written by
    Hugging Face `datasets` `save_to_disk`. A missing `dev` or `test` is carved out of train with
    a seeded, stratified split (`dev_fraction`, `test_fraction`; a fraction of 0 means "no split").
    """

    train: str | Path | None = None
    dev: str | Path | None = None
    test: str | Path | None = None
    # None picks the first of ("text", "sentence", "content") the table has.
    text_column: str | None = None
    label_column: str = "label"
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    # Keep a seeded random subset of train (after the split); None keeps all of it.
    max_train_examples: int | None = None
    # Longest text, in tokens, that loaders pass to the model (longer texts are truncated).
    max_length: int = 128
    # What a table may hold instead of it being an error (each gives a warning naming the lines):
    # rows with more fields than the header (the extra fields are ignored), and rows without a
    # label (empty, null, NaN: skipped, e.g. unlabelled examples mixed into a labelled file).
    allow_extra_fields: bool = False
    drop_unlabelled: bool = False
    # Shuffled training batches of similar-length texts (LengthGroupedBatchSampler): dynamic
    # padding then pads little (HWU64: 1.37 padded tokens per real token instead of 1.89;
    # SST-2 phrases: 1.35 instead of 3.0), so an epoch computes on far fewer tokens.
    group_by_length: bool = True
    # causal-lm only: how {prompt, response} rows are written for the model. "chat" uses the
    # tokenizer's chat template (a user turn and an assistant turn), "plain" joins prompt and
    # response tokens, "auto" is "chat" when the tokenizer has a template.
    prompt_format: Literal["auto", "chat", "plain"] = "auto"

    def __post_init__(self) -> None:
        for name in ("dev_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"data.{name} must be in [0, 1), got {value!r}")
        if self.dev_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                "data.dev_fraction + data.test_fraction must leave some training data "
                f"(got {self.dev_fraction} + {self.test_fraction})"
            )
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise ConfigError(f"data.max_train_examples must be >= 1, got {self.max_train_examples}")
        if self.max_length < 1:
            raise ConfigError(f"data.max_length must be >= 1, got {self.max_length}")
        if self.prompt_format not in ("auto", "chat", "plain"):
            raise ConfigError(
                f"data.prompt_format must be 'auto', 'chat' or 'plain', got {self.prompt_format!r}"
            )
        if self.train is None and (self.dev is not None or self.test is not None):
            raise ConfigError(
                "data.dev / data.test were given without data.train; give data.train too "
                "(the embedded digits set has its own fixed split)"
            )
