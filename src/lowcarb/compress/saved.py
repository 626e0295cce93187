"""Save and reload transformed models by replaying their transform log (no pickles anywhere).

A transformed model no longer matches its architecture's constructor, so it is saved as the log
of transforms applied (lowcarb.models.transforms) plus every tensor:

- ``save_transformed(model, folder)`` / ``load_transformed(fresh_model, folder)``: a bare model,
  ``model.safetensors`` + ``transforms.json``, reloaded onto a freshly built model of the same
  architecture (any weights).
- ``save_compressed(handle, folder)`` / ``load_compressed(folder)``: a lowcarb model folder, what
  ``lowcarb.models.save_model`` writes for the base model (``lowcarb_model.json``, the Hugging Face
  ``config.json``, tokenizer files) but not its fp32 weights, plus ``compressed.json`` (the log,
  and how to rebuild each state entry) and ``compressed.safetensors``. The base weights file is
  deliberately absent, so loading the folder as a plain model fails loudly instead of silently
  giving a randomly initialised network.

Reloading builds the base model, replays the log in the order the transforms were applied
(whatever that order was), then loads the tensors.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from torch import nn

from lowcarb.errors import MissingPathError, ModelError
from lowcarb.models import ModelHandle, build_reference_model, save_model
from lowcarb.models.handle import kind_of
from lowcarb.models.state import encode_state, load_state
from lowcarb.models.transforms import (
    record_from_json,
    record_to_json,
    replay,
    transform_log,
)

__all__ = [
    "COMPRESSED_FILE",
    "TRANSFORMS_FILE",
    "is_compressed",
    "load_compressed",
    "load_transformed",
    "save_compressed",
    "save_transformed",
]

COMPRESSED_FILE = "compressed.json"
TENSORS_FILE = "compressed.safetensors"
TRANSFORMS_FILE = "transforms.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = 2


def _write(model: nn.Module, folder: Path, meta_file: str, tensors_file: str) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors, entries, versions = encode_state(model)
    save_file(tensors, str(folder / tensors_file))
    meta = {
        "format": FORMAT,
        "transforms": [record_to_json(r) for r in transform_log(model)],
        "entries": entries,
        "versions": versions,
    }
    (folder / meta_file).write_text(json.dumps(meta, indent=1) + "\n")
    return folder


def _read_meta(path: Path, writer: str) -> dict[str, Any]:
    if not path.is_file():
        raise MissingPathError(f"{path} not found: is {path.parent} a folder written by {writer}?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); the folder is damaged") from exc


def _rebuild(model: nn.Module, folder: Path, meta: dict[str, Any], tensors_file: str) -> nn.Module:
    from safetensors.torch import load_file

    if meta.get("format") != FORMAT:
        raise ModelError(
            f"{folder} was saved in format {meta.get('format')!r} and this lowcarb reads format "
            f"{FORMAT} (the transform log); re-run the recipe or transform to save it again"
        )
    model = replay(model, [record_from_json(r) for r in meta.get("transforms", [])])
    load_state(model, meta["entries"], meta.get("versions", {}), load_file(str(folder / tensors_file)))
    return model.eval()


def save_transformed(model: nn.Module, folder: str | Path) -> Path:
    """Write ``model.safetensors`` (every tensor) and ``transforms.json`` (the log)."""
    return _write(model, Path(folder), TRANSFORMS_FILE, WEIGHTS_FILE)


def load_transformed(model: nn.Module, folder: str | Path) -> nn.Module:
    """Replay the saved log on a freshly built ``model`` (same architecture, any weights) and load
    the saved tensors; returns the model (a new module when a transform had to build one)."""
    src = Path(folder)
    meta = _read_meta(src / TRANSFORMS_FILE, "save_transformed")
    return _rebuild(model, src, meta, WEIGHTS_FILE)


# ---------------------------------------------------------------------------------------------
# lowcarb model folders
# ---------------------------------------------------------------------------------------------


# Families saved as a Hugging Face folder (config.json + tokenizer files).
HF_FAMILIES = ("hf", "causal-lm")


def _fresh_base(handle: ModelHandle, hf_config: Any | None) -> nn.Module:
    """An fp32 model of the handle's base architecture (random weights, overwritten on load)."""
    if handle.family not in HF_FAMILIES:
        return build_reference_model(
            handle.config, handle.num_labels, handle.input_shape, handle.tokenizer
        )
    import transformers

    if hf_config is None:
        raise ModelError("a Hugging Face base needs its config to be rebuilt")
    model_type = type(handle.model)
    if isinstance(handle.model, transformers.PreTrainedModel):
        return model_type(hf_config)
    # The saved config names the class (save_pretrained writes `architectures`).
    arch = (getattr(hf_config, "architectures", None) or [None])[0]
    if arch and isinstance(getattr(transformers, arch, None), type):
        return getattr(transformers, arch)(hf_config)
    if handle.family == "causal-lm":
        return transformers.AutoModelForCausalLM.from_config(hf_config)
    return transformers.AutoModelForSequenceClassification.from_config(hf_config)


def save_compressed(handle: ModelHandle, folder: str | Path) -> Path:
    """Write ``handle``'s transformed model into ``folder`` (its transform log says how)."""
    out = Path(folder)
    hf_config = getattr(handle.model, "config", None)
    # The base description (config, tokenizer, labels) exactly as an fp32 model would have it...
    base = _fresh_base(handle, hf_config)
    save_model(dataclasses.replace(handle, model=base), out)
    # ...minus its (random) fp32 weights: only the transformed weights below are real.
    for weights in out.glob("*.safetensors"):
        weights.unlink()
    return _write(handle.model, out, COMPRESSED_FILE, TENSORS_FILE)


def is_compressed(folder: str | Path) -> bool:
    return (Path(folder) / COMPRESSED_FILE).is_file()


def _base_handle(src: Path) -> tuple[ModelHandle, Any | None]:
    from lowcarb.models.serialize import DESCRIPTION_FILE, config_from_json

    desc = json.loads((src / DESCRIPTION_FILE).read_text())
    family = desc["family"]
    tokenizer: Any | None = None
    hf_config = None
    if family in HF_FAMILIES:
        from transformers import AutoConfig, AutoTokenizer

        hf_config = AutoConfig.from_pretrained(str(src), local_files_only=True)
        if (src / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    elif family == "transformer":
        if desc.get("tokenizer") == "saved":
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
        else:
            from lowcarb.models import ByteTokenizer

            tokenizer = ByteTokenizer()
    handle = ModelHandle(
        nn.Identity(), tokenizer, kind_of(family), family, config_from_json(desc["config"]),
        int(desc["num_labels"]), tuple(desc.get("label_names") or ()),
        tuple(desc["input_shape"]) if desc.get("input_shape") else None, provenance=desc.get("provenance"),
    )  # fmt: skip
    return handle, hf_config


def load_compressed(folder: str | Path) -> ModelHandle:
    """Rebuild a model saved by ``save_compressed``."""
    src = Path(folder)
    meta = _read_meta(src / COMPRESSED_FILE, "save_compressed")
    handle, hf_config = _base_handle(src)
    model = _rebuild(_fresh_base(handle, hf_config), src, meta, TENSORS_FILE)
    return dataclasses.replace(handle, model=model)
