"""Shrink a student's word-embedding table to the tokens a task uses (and optionally to int8 or 4 bits).

MiniLM's 30,522 x 384 word-embedding table is half of its parameters, and a distilled L3 student
keeps all of it. A task's text uses a fraction of the WordPiece vocabulary (HWU64's training
utterances use 4,274 of its 30,522 tokens, `benchmarks/sweeps/vocab_keep_first_hwu64.json`),
so the table is cut to those rows. The tokenizer is unchanged: the
new `CompactEmbedding` maps old token ids to new rows through a small int16 table. A token that was
dropped maps to the kept token whose embedding is closest (cosine; `unknown="nearest"`) or to
[UNK] (`unknown="unk"`). With `bits=8` the kept rows are stored as int8 with one fp32 scale per
row (symmetric), a further 4x on the table; with `bits=4` as 4-bit codes, two to a byte, with one
fp16 scale per `group_size` entries of a row (as GGUF's Q4_0 stores LLM weights), 7-8x.
A row is looked up once per token, so its codes are dequantized only for the tokens of a batch.

    ids = token_ids_in(train_texts, tokenizer)
    summary = apply(model, VocabConfig(keep=ids, unk_id=tokenizer.unk_token_id, bits=8))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lowcarb.compress.distill.capture import embedding_module
from lowcarb.errors import ConfigError, ModelError
from lowcarb.models.surgery import count_parameters
from lowcarb.models.transforms import (
    TransformSummary,
    dataclass_from_json,
    record,
    register_transform,
)


@dataclass(frozen=True)
class VocabConfig:
    """keep: token ids to keep (special tokens are always kept when given in `always`).
    unknown: where dropped ids go: the nearest kept embedding, or `unk_id`.
    bits: how the kept rows are stored: 32 (fp32, trainable), 8 (int8, one scale per row) or 4
    (4-bit codes, one fp16 scale per group of entries: `group_size`, or the largest even divisor
    of the row width below it, e.g. 104 for TinyBERT's 312; refused below 16 entries)."""

    keep: tuple[int, ...]
    unk_id: int | None = None
    always: tuple[int, ...] = ()
    unknown: Literal["nearest", "unk"] = "nearest"
    bits: Literal[32, 8, 4] = 32
    group_size: int = 128

    def __post_init__(self) -> None:
        if not self.keep:
            raise ConfigError("VocabConfig.keep is empty: give the token ids the task uses")
        if self.unknown not in ("nearest", "unk"):
            raise ConfigError(f"unknown must be 'nearest' or 'unk', got {self.unknown!r}")
        if self.unknown == "unk" and self.unk_id is None:
            raise ConfigError("unknown='unk' needs unk_id (tokenizer.unk_token_id)")
        if self.bits not in (32, 8, 4):
            raise ConfigError(f"bits must be 32, 8 or 4, got {self.bits!r}")
        if self.group_size < 2 or self.group_size % 2:
            raise ConfigError(f"group_size must be an even number >= 2, got {self.group_size}")


class CompactEmbedding(nn.Module):
    """An embedding over a subset of the vocabulary: `rows[old_to_new[token_id]]`.

    The table is a trainable fp32 parameter (bits 32), an int8 buffer with per-row fp32 scales
    (bits 8), or a buffer of 4-bit codes packed two to a byte with an fp16 scale per group of
    `group_size` entries (bits 4). Quantized rows are dequantized only for the rows a batch looks up.
    """

    old_to_new: Tensor
    rows_int8: Tensor
    row_scale: Tensor
    rows_int4: Tensor
    group_scale: Tensor
    weight: nn.Parameter | None

    def __init__(self, old_to_new: Tensor, table: Tensor, bits: int, group_size: int = 128) -> None:
        super().__init__()
        self.num_embeddings = int(old_to_new.numel())  # the tokenizer's vocabulary size
        self.embedding_dim = int(table.shape[1])
        self.padding_idx = None
        # int16 ids when the kept rows allow it: the map is vocab-sized, so its width matters.
        small = table.shape[0] <= torch.iinfo(torch.int16).max
        self.register_buffer("old_to_new", old_to_new.to(torch.int16 if small else torch.int32))
        self.bits = bits
        self.group_size = _group_for(self.embedding_dim, group_size) if bits == 4 else group_size
        self.weight = None
        if bits == 8:
            codes, scale = _int8_rows(table)
            self.register_buffer("rows_int8", codes)
            self.register_buffer("row_scale", scale)
        elif bits == 4:
            packed, scale = _int4_rows(table, self.group_size)
            self.register_buffer("rows_int4", packed)
            self.register_buffer("group_scale", scale)
        else:
            self.weight = nn.Parameter(table.clone())

    @property
    def rows(self) -> int:
        return int(self.table().shape[0])

    def table(self) -> Tensor:
        """The stored rows: int8 codes, packed 4-bit codes (half the width), or the fp32 parameter."""
        if self.bits == 8:
            return self.rows_int8
        if self.bits == 4:
            return self.rows_int4
        assert self.weight is not None  # set whenever the rows are not quantized
        return self.weight

    def table_bytes(self) -> int:
        """Bytes of the stored rows, their scales and the id map (what the cut leaves on disk)."""
        stored = [self.table(), self.old_to_new]
        stored += [self.row_scale] if self.bits == 8 else [self.group_scale] if self.bits == 4 else []
        return sum(t.numel() * t.element_size() for t in stored)

    def forward(self, input_ids: Tensor) -> Tensor:
        index = self.old_to_new[input_ids].long()
        if self.bits == 8:
            return self.rows_int8[index].float() * self.row_scale[index].unsqueeze(-1)
        if self.bits == 4:
            # Low nibble = even column, high nibble = odd column; stored with an offset of 8.
            # Unpacked with integer arithmetic on int32: ONNX export mistypes uint8 bit shifts.
            packed = self.rows_int4[index].int()
            high = torch.div(packed, 16, rounding_mode="floor")
            codes = torch.stack([packed - 16 * high, high], dim=-1).flatten(-2).float() - 8.0
            grouped = codes.unflatten(-1, (-1, self.group_size))
            return (grouped * self.group_scale[index].float().unsqueeze(-1)).flatten(-2)
        return F.embedding(index, self.table())

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.bits == 4 else ""
        return f"vocab={self.num_embeddings}, rows={self.rows}, dim={self.embedding_dim}, bits={self.bits}{group}"


# Below this many entries per fp16 scale, 4-bit rows stop paying: 16 entries cost 10 bits each.
_MIN_GROUP = 16


def _group_for(width: int, group_size: int) -> int:
    """The largest even divisor of `width` that is at most `group_size` (codes pack in pairs)."""
    if width % 2:
        raise ConfigError(f"4-bit rows pack two codes per byte: the embedding width {width} is odd; use bits=8")
    group = max(d for d in range(2, min(group_size, width) + 1, 2) if width % d == 0)
    if group < min(group_size, _MIN_GROUP):
        raise ConfigError(
            f"4-bit rows: no group of {_MIN_GROUP}..{group_size} entries divides the embedding width "
            f"{width} (the largest is {group}, a scale per {group} codes costs more than int8); "
            "use bits=8, or a group_size that divides the width"
        )
    return group


def _int8_rows(table: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 codes with one fp32 scale per row."""
    amax = table.abs().amax(dim=1)
    scale = (amax / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
    codes = torch.round(table / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return codes, scale.float()


# Clipping candidates for 4-bit groups: with 15 levels, clipping a group's largest entry often
# lowers the error on the others by more than it costs on that one; each group keeps the best.
_INT4_CLIPS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)


def _int4_rows(table: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """Symmetric 4-bit codes in [-7, 7], one fp16 scale per group of `group_size` entries (the
    scale minimizing the group's squared error among `_INT4_CLIPS` of its largest magnitude),
    packed two codes per uint8 with an offset of 8."""
    groups = table.float().unflatten(1, (-1, group_size))  # rows x groups x group_size
    amax = groups.abs().amax(dim=-1)
    best_err = torch.full_like(amax, float("inf"))
    best_scale = torch.empty_like(amax)
    for clip in _INT4_CLIPS:  # the first, 1.0, always wins a group whose errors are all inf
        # fp16 here already: the error is judged with the scale that is stored.
        scale = (amax * clip / 7.0).clamp_min(torch.finfo(torch.float16).tiny).half().float()
        codes = torch.round(groups / scale[..., None]).clamp(-7, 7)
        err = ((codes * scale[..., None] - groups) ** 2).sum(dim=-1)
        better = (err < best_err) | (clip == 1.0)
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
    if not bool(torch.isfinite(best_scale.half()).all()):
        raise ConfigError(
            "4-bit rows: an embedding entry is too large for an fp16 scale (|x| above about 4.6e5); "
            "use bits=8 (fp32 scales)"
        )
    codes = (torch.round(groups / best_scale[..., None]).clamp(-7, 7) + 8).to(torch.uint8).flatten(1)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return packed, best_scale.half()


def token_ids_in(texts: Iterable[str], tokenizer: Any, *, chunk: int = 2000) -> tuple[int, ...]:
    """Sorted ids of every token the tokenizer produces for `texts`, plus its special tokens."""
    seen: set[int] = set(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
    batch: list[str] = []

    def flush() -> None:
        for row in tokenizer(batch)["input_ids"]:
            seen.update(int(i) for i in row)
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= chunk:
            flush()
    if batch:
        flush()
    return tuple(sorted(seen))


def _word_embeddings(model: nn.Module) -> tuple[nn.Module, str, nn.Embedding]:
    embeddings = embedding_module(model)
    words = getattr(embeddings, "word_embeddings", None)
    if embeddings is not None and isinstance(words, nn.Embedding):
        return embeddings, "word_embeddings", words
    for owner_name in ("embed", "embedding"):
        table = getattr(model, owner_name, None)
        if isinstance(table, nn.Embedding):
            return model, owner_name, table
    raise ModelError(
        f"{type(model).__name__} has no word-embedding table to prune (looked for "
        "embeddings.word_embeddings and embed); apply vocabulary pruning to a text model"
    )


def _nearest_kept(table: Tensor, kept: Tensor, dropped: Tensor, chunk: int = 4096) -> Tensor:
    """For each dropped row, the position (in `kept`) of the most cosine-similar kept row."""
    keys = F.normalize(table[kept], dim=1)
    out = torch.empty(len(dropped), dtype=torch.long)
    for start in range(0, len(dropped), chunk):
        queries = F.normalize(table[dropped[start : start + chunk]], dim=1)
        out[start : start + chunk] = (queries @ keys.T).argmax(dim=1)
    return out


def apply(model: nn.Module, config: VocabConfig) -> TransformSummary:
    """Replace the model's word embeddings by a `CompactEmbedding` (in place).

    Details: ``vocab_before`` / ``vocab_after`` (rows), ``bits``, ``table_bytes_before`` / ``_after``.
    """
    owner, attr, table_module = _word_embeddings(model)
    table = table_module.weight.detach().float()
    vocab = table.shape[0]
    if config.bits != 32 and not bool(torch.isfinite(table).all()):
        raise ModelError(
            "the word-embedding table holds NaN or infinite values, which cannot be quantized; "
            "check the model's training (or cut the vocabulary with bits=32)"
        )
    keep_set = set(config.keep) | set(config.always)
    if config.unk_id is not None:
        keep_set.add(config.unk_id)
    bad = [i for i in keep_set if not 0 <= i < vocab]
    if bad:
        raise ConfigError(f"token ids {sorted(bad)[:5]} are outside the vocabulary (0..{vocab - 1})")
    kept = torch.tensor(sorted(keep_set), dtype=torch.long)
    old_to_new = torch.empty(vocab, dtype=torch.long)
    old_to_new[kept] = torch.arange(len(kept))
    mask = torch.ones(vocab, dtype=torch.bool)
    mask[kept] = False
    dropped = mask.nonzero().flatten()
    if len(dropped):
        if config.unknown == "nearest":
            old_to_new[dropped] = _nearest_kept(table, kept, dropped)
        else:
            old_to_new[dropped] = int(old_to_new[config.unk_id])
    params_before = count_parameters(model)
    bytes_before = table.numel() * table_module.weight.element_size()
    # Built on the host (the id map is computed there), then moved where the table was.
    compact = CompactEmbedding(old_to_new, table[kept], config.bits, config.group_size).to(table.device)
    setattr(owner, attr, compact)
    name = next(n for n, m in model.named_modules() if m is compact)
    record(model, config, describe(model))
    details = {
        "vocab_before": vocab,
        "vocab_after": len(kept),
        "bits": config.bits,
        "table_bytes_before": bytes_before,
        "table_bytes_after": compact.table_bytes(),
    }
    return TransformSummary(
        "vocab", config, params_before, count_parameters(model), [name], details, model=model
    )


def describe(model: nn.Module) -> dict[str, Any]:
    """The shapes needed to rebuild a pruned model's CompactEmbedding before loading weights."""
    for name, module in model.named_modules():
        if isinstance(module, CompactEmbedding):
            return {
                "module": name,
                "vocab": module.num_embeddings,
                "rows": module.rows,
                "dim": module.embedding_dim,
                "bits": module.bits,
                "group_size": module.group_size,
            }
    raise ModelError("the model has no CompactEmbedding: apply vocabulary pruning first")


def restore(model: nn.Module, description: dict[str, Any]) -> nn.Module:
    """Put an empty CompactEmbedding of the described shape where the word embeddings are, so a
    saved state dict of a pruned model loads into a freshly built model."""
    try:
        name, rows, dim = description["module"], int(description["rows"]), int(description["dim"])
        vocab_size = int(description["vocab"])
        # Models saved before 4-bit rows existed describe their rows by an "int8" flag.
        bits = int(description["bits"]) if "bits" in description else 8 if description["int8"] else 32
        group_size = int(description.get("group_size", 32))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"not a vocabulary description ({exc}); it comes from vocab.describe") from exc
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    if not hasattr(owner, attr):
        raise ModelError(f"the model has no module {name}; was it built like the pruned one?")
    shell = CompactEmbedding(torch.zeros(vocab_size, dtype=torch.long), torch.zeros(rows, dim), bits, group_size)
    setattr(owner, attr, shell)
    return model


def keep_for_texts(
    texts: Sequence[str],
    tokenizer: Any,
    *,
    bits: Literal[32, 8, 4] = 32,
    group_size: int = 128,
    keep_first: int = 0,
) -> VocabConfig:
    """The usual config: keep the tokens of `texts` and the tokenizer's special tokens.

    keep_first: also keep ids 0 .. keep_first - 1. WordPiece vocabularies (BERT, MiniLM) list their
    pieces roughly by frequency ("the" is 1996, "thyroid" 29610), so this keeps the common words
    that the training text happens to lack: SST-2's training phrases miss 435 of the 4,547 token
    types of its dev sentences, 137 of them with keep_first=20000.
    """
    if keep_first < 0:
        raise ConfigError(f"keep_first must be >= 0, got {keep_first}")
    vocab_size = getattr(tokenizer, "vocab_size", None) or keep_first
    first = range(min(keep_first, int(vocab_size)))
    return VocabConfig(
        keep=tuple(sorted(set(token_ids_in(texts, tokenizer)) | set(first))),
        unk_id=getattr(tokenizer, "unk_token_id", None),
        always=tuple(int(i) for i in getattr(tokenizer, "all_special_ids", []) or []),
        bits=bits,
        group_size=group_size,
    )


def _config_from_json(data: dict[str, Any]) -> VocabConfig:
    """A saved VocabConfig; logs written before 4-bit rows have `int8` where `bits` is now."""
    data = dict(data)
    if "int8" in data and "bits" not in data:
        data["bits"] = 8 if data.pop("int8") else 32
    return cast(VocabConfig, dataclass_from_json(VocabConfig, data))


register_transform(
    VocabConfig,
    "vocab",
    lambda model, _cfg, structure: restore(model, structure),
    from_json=_config_from_json,
)
