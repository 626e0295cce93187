"""The `vocab` stage: cut the word-embedding table to the tokens of the training text (+ int8/4-bit).

For MiniLM the 30,522 x 384 table is half of the parameters; a task uses a fraction of it.
The tokenizer is unchanged (a small id map does the translation), so the model still reads any
text: a token never seen in training maps to the nearest kept embedding (or to [UNK]).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from lowcarb.compress.distill import vocab
from lowcarb.compress.distill.vocab import VocabConfig
from lowcarb.data import TextSplit
from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.registry import register_stage, technique_fields

# VocabConfig's `unknown` (where dropped tokens go), `bits` (kept rows as fp32, int8 with one
# scale per row, or 4-bit codes with an fp16 scale per `group_size` entries) and `group_size`;
# the kept ids come from the training text. Defaults: 4-bit rows in groups of 128, chosen by
# benchmarks/sweeps/vocab_row_bits.py on HWU64 val (mean over 3 fine-tuned MiniLMs: int8 rows
# 0.9331, 4-bit g128 0.9315, within the 0.2 points its rule allows, at 52 % of int8's table).
_VocabFields = technique_fields(
    VocabConfig, include=("unknown", "bits", "group_size"), defaults={"bits": 4, "group_size": 128}
)


class VocabStageConfig(_VocabFields):  # type: ignore[misc, valid-type]
    # Optional extra text (a .txt file, one text per line) whose tokens are kept too, e.g. the
    # full unlabelled corpus when training used a subset.
    extra_text: str | None = None
    # Also keep the first N ids of the vocabulary (WordPiece lists frequent pieces first): common
    # words the training text lacks keep their own embedding (see vocab.keep_for_texts).
    keep_first: int = Field(default=0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _int8_was_renamed(cls, values: Any) -> Any:
        """Recipes written before 4-bit rows said `int8: true/false`; say what replaced it."""
        if isinstance(values, dict) and "int8" in values:
            raise ValueError(
                "vocab.int8 was replaced by vocab.bits: write `bits: 8` for int8 rows (`int8: "
                "true`), `bits: 32` for fp32 rows (`int8: false`), or `bits: 4` for 4-bit rows"
            )
        return values

    def technique(self, base: VocabConfig | None = None) -> VocabConfig:
        """``base`` (the ids of the training text) with this stage's `unknown`, `bits` and
        `group_size`; without a base, a one-id placeholder, enough to validate the fields when
        the recipe is read."""
        base = base or VocabConfig(keep=(0,), unk_id=0)
        return dataclasses.replace(
            base, unknown=self.unknown, bits=self.bits, group_size=self.group_size
        )


@register_stage("vocab", VocabStageConfig)
def vocab_stage(ctx: RunContext, cfg: VocabStageConfig) -> RunContext:
    """Keep only the word embeddings of tokens in the training text (int8 or 4-bit rows)."""
    train = ctx.data.train
    if not isinstance(train, TextSplit) or ctx.tokenizer is None:
        raise ValueError("the vocab stage prunes a text model's embeddings; this run's data is not text")
    texts = list(train.texts)
    if cfg.extra_text is not None:
        path = Path(cfg.extra_text)
        if not path.is_file():
            raise ValueError(f"vocab.extra_text: {cfg.extra_text} is not a file (one text per line)")
        texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    config = cfg.technique(vocab.keep_for_texts(texts, ctx.tokenizer, keep_first=cfg.keep_first))
    summary = vocab.apply(ctx.model, config)
    notes = summary.to_dict()
    # The kept ids are thousands of numbers: the report shows the counts (vocab_before/_after).
    notes["config"] = {k: v for k, v in notes["config"].items() if k not in ("keep", "always")}
    ctx.note(**notes)
    return ctx
