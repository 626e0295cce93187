"""Checks of a model folder before anything is built or allocated from it.

A model folder is user input like any file: it may have been copied half-way (a truncated
`model.safetensors`), assembled by hand (no tokenizer files: transformers would then build a
tokenizer that knows only its special tokens and map every word to [UNK]), or edited
(`num_labels: -1`, a width that asks for 100 GB). Each of those is a `ModelError` that names the
file, raised before a tensor is allocated: shapes come from the safetensors header and from the
model built on PyTorch's meta device, which allocates nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

from lowcarb.errors import ModelError

# Files a Hugging Face tokenizer is loaded from (fast JSON, WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
# A real vocabulary has thousands of entries; one this small is special tokens only.
MIN_VOCABULARY = 32
KNOWN_FAMILIES = ("cnn", "mlp", "transformer", "hf", "causal-lm")


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header (reads the header only; checks the file covers
    every tensor, which catches a truncated copy)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except SafetensorError as exc:
        reason = str(exc).removeprefix("Error while deserializing header: ")
        raise ModelError(
            f"{path} is damaged or truncated ({reason}); copy or save the model again"
        ) from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def count_elements(shapes: Mapping[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def check_tokenizer_files(folder: Path) -> None:
    if not any((folder / name).exists() for name in TOKENIZER_FILES):
        raise ModelError(
            f"{folder} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); without them "
            "every word would be an unknown token. Save the tokenizer into the folder "
            "(tokenizer.save_pretrained(folder)) or copy its files there"
        )


def check_vocabulary(tokenizer: Any, folder: Path) -> None:
    size = len(tokenizer)
    if size < MIN_VOCABULARY:
        raise ModelError(
            f"{folder}: the tokenizer has {size} tokens (special tokens only?); check its files "
            f"({', '.join(TOKENIZER_FILES)})"
        )


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_description(payload: Any, described: Path) -> None:
    """The fields of lowcarb_model.json that size the model, before anything is built."""
    if not isinstance(payload, Mapping):
        raise ModelError(f"{described}: not a lowcarb model description (expected a JSON object)")
    family = payload.get("family")
    if family not in KNOWN_FAMILIES:
        raise ModelError(
            f"{described}: unknown model family {family!r}; expected one of {list(KNOWN_FAMILIES)}"
        )
    num_labels = payload.get("num_labels")
    least = 0 if family == "causal-lm" else 1  # a language model has no label head
    if not _whole(num_labels) or num_labels < least:
        raise ModelError(f"{described}: num_labels must be a whole number >= {least}, got {num_labels!r}")
    names = payload.get("label_names") or []
    if not isinstance(names, list) or (names and len(names) != num_labels):
        raise ModelError(
            f"{described}: label_names must list num_labels ({num_labels}) names, got {names!r:.80}"
        )
    shape = payload.get("input_shape")
    if shape is not None and (
        not isinstance(shape, list) or not 1 <= len(shape) <= 4 or not all(_whole(d) and d > 0 for d in shape)
    ):
        raise ModelError(
            f"{described}: input_shape must be positive whole numbers (C, H, W), got {shape!r:.80}"
        )
    if not isinstance(payload.get("config"), Mapping):
        raise ModelError(f"{described}: 'config' must be a JSON object of model settings")


def check_shapes_match(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], weights: Path, described: Path
) -> None:
    """The model the description builds (on the meta device) against the weights file's header."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if not (missing or unexpected or wrong):
        return
    parts = [f"{k} is {tuple(expected[k])} described, {tuple(found[k])} in the file" for k in wrong[:2]]
    parts += [f"{label}: {', '.join(keys[:3])}" for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    wanted, held = count_elements(expected), count_elements(found)
    raise ModelError(
        f"{weights} does not match the model described in {described}: size mismatch ("
        + "; ".join(parts)
        + f"); {described.name} asks for {wanted:,} parameters ({wanted * 4 / 1e9:.3g} GB as "
        f"float32), {weights.name} holds {held:,}; was the JSON edited, or the model changed by a "
        "transform after building?"
    )


def check_hf_size(folder: Path, config_params: int, weights: Mapping[str, tuple[int, ...]]) -> None:
    """A config.json that asks for far more parameters than the weights hold was edited (a new
    head is allowed for: it is small)."""
    held = count_elements(weights)
    if held and config_params > 2 * held + 10_000_000:
        raise ModelError(
            f"{folder / 'config.json'} describes a model of {config_params:,} parameters "
            f"({config_params * 4 / 1e9:.3g} GB as float32) but the weights hold {held:,}; "
            "was config.json edited?"
        )
