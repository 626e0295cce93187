"""Save and reload models: safetensors weights plus a JSON description, never pickles.

Layout of a saved folder:
- reference models: `model.safetensors` + `lowcarb_model.json` (family, ModelConfig, labels,
  input shape) + tokenizer files when the model reads MiniLM's tokenizer;
- Hugging Face models (classifiers and causal LMs): the usual `save_pretrained` folder
  (config.json, model.safetensors, tokenizer files) + `lowcarb_model.json`, so the folder also
  loads with transformers alone.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save_model as save_safetensors_model

from lowcarb import files
from lowcarb.errors import MissingPathError, ModelError
from lowcarb.models.build import build_reference_model
from lowcarb.models.byte_tokenizer import ByteTokenizer
from lowcarb.models.causal_lm import load_causal_lm_folder
from lowcarb.models.checks import check_description, check_shapes_match, safetensors_shapes
from lowcarb.models.config import ModelConfig
from lowcarb.models.handle import ModelHandle, kind_of
from lowcarb.models.hf import load_hf_classifier, load_tokenizer, quiet_transformers

DESCRIPTION_FILE = "lowcarb_model.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def _config_to_json(config: ModelConfig) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    out["name"] = str(config.name)
    out["channels"] = list(config.channels)
    return out


def config_from_json(payload: dict[str, Any]) -> ModelConfig:
    """The ModelConfig of a saved description (unknown keys from other versions are dropped)."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    values = {k: v for k, v in payload.items() if k in known}
    if "channels" in values:
        values["channels"] = tuple(values["channels"])
    return ModelConfig(**values)


def save_model(handle: ModelHandle, folder: str | Path) -> Path:
    """Write the model into `folder` (created if needed); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    description: dict[str, Any] = {
        "format": "lowcarb-model",
        "version": FORMAT_VERSION,
        "family": handle.family,
        "kind": handle.kind,
        "num_labels": handle.num_labels,
        "label_names": list(handle.label_names),
        "input_shape": list(handle.input_shape) if handle.input_shape is not None else None,
        "config": _config_to_json(handle.config),
    }
    if handle.provenance:
        description["provenance"] = handle.provenance
    if handle.family in ("hf", "causal-lm"):
        with quiet_transformers():
            handle.model.save_pretrained(str(folder), safe_serialization=True)  # type: ignore[operator]
            if handle.tokenizer is not None:
                handle.tokenizer.save_pretrained(str(folder))
    else:
        # save_model (not save_file) copes with tied/shared tensors.
        save_safetensors_model(handle.model, str(folder / WEIGHTS_FILE))
        tokenizer = handle.tokenizer
        if tokenizer is None or isinstance(tokenizer, ByteTokenizer):
            description["tokenizer"] = "bytes"
        else:
            description["tokenizer"] = "saved"
            tokenizer.save_pretrained(str(folder))
    files.write_json(folder / DESCRIPTION_FILE, description)
    return folder


def load_model(folder: str | Path) -> ModelHandle:
    """Rebuild a model saved by `save_model`, or load a plain Hugging Face classifier folder."""
    folder = Path(folder)
    if not folder.exists():
        raise MissingPathError(f"model folder not found: {folder}")
    described = folder / DESCRIPTION_FILE
    if not described.exists():
        # A plain Hugging Face folder: keep its own head and labels.
        hf_model, hf_tokenizer = load_hf_classifier(folder)
        hf_config: Any = hf_model.config  # a transformers PretrainedConfig
        id2label = getattr(hf_config, "id2label", {}) or {}
        names = tuple(str(id2label[i]) for i in sorted(id2label))
        return ModelHandle(hf_model, hf_tokenizer, "text", "hf", ModelConfig(name=str(folder)),
                           int(hf_config.num_labels), names)
    try:
        payload = json.loads(described.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{described}: not a valid lowcarb model description ({exc})") from None
    check_description(payload, described)
    family, num_labels = payload["family"], payload["num_labels"]
    try:
        config = config_from_json(payload["config"])
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{described}: config: {exc}") from None
    names = tuple(str(n) for n in payload.get("label_names") or ())
    if family == "causal-lm":
        return ModelHandle(
            *load_causal_lm_folder(folder), "text", "causal-lm", config, 0, (), None,
            payload.get("provenance"),
        )
    if family == "hf":
        return ModelHandle(*load_hf_classifier(folder), "text", "hf", config, num_labels, names)
    shape = tuple(payload["input_shape"]) if payload.get("input_shape") else None
    tokenizer: Any | None = None
    if family == "transformer":
        if payload.get("tokenizer") == "saved":
            tokenizer = load_tokenizer(folder)
        else:
            tokenizer = ByteTokenizer()
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise MissingPathError(f"{folder}: no {WEIGHTS_FILE} next to {DESCRIPTION_FILE}")
    # Sizes are checked on the meta device (no memory) against the file's header (no loading):
    # an edited description must not allocate 100 GB or fail deep inside torch.
    try:
        with torch.device("meta"):
            planned = build_reference_model(config, num_labels, shape, tokenizer)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ModelError(f"{described}: cannot build the model it describes: {exc}") from None
    expected = {k: tuple(v.shape) for k, v in planned.state_dict().items()}
    check_shapes_match(expected, safetensors_shapes(weights), weights, described)
    model = build_reference_model(config, num_labels, shape, tokenizer)
    model.load_state_dict(load_file(str(weights)), strict=True)
    return ModelHandle(model, tokenizer, kind_of(family), family, config, num_labels, names, shape)
