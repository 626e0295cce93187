"""Adapter-only files: lowcarb's own format and PEFT's, both ways.

lowcarb format (a folder):
  lowcarb_adapter.json          {"format": "lowcarb-lora", "version": 1, "config": LoraConfig,
                                 "modules": [wrapped module names]}
  lowcarb_adapter.safetensors   adapter + modules_to_save weights, keyed by their names in the model

PEFT format (what `PeftModel.save_pretrained` writes, checked against peft 0.21):
  adapter_config.json           {"peft_type": "LORA", "r", "lora_alpha", "lora_dropout",
                                 "target_modules", "modules_to_save", "use_rslora", "bias", ...}
  adapter_model.safetensors     "base_model.model.<module>.lora_A.weight", "...lora_B.weight",
                                 "...lora_embedding_A", "...lora_embedding_B" (no ".weight"),
                                 and "base_model.model.<module>.weight|bias" for modules_to_save.

Our LoRA wrapper uses PEFT's attribute names, so a key maps to PEFT's by adding the prefix.
Loading never re-runs pattern matching: the wrapped modules are read from the weight keys, so an
adapter lands on exactly the modules it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lowcarb import files
from lowcarb.adapt import lora
from lowcarb.adapt.lora import LoraConfig
from lowcarb.models.transforms import TransformSummary

LOWCARB_CONFIG = "lowcarb_adapter.json"
LOWCARB_WEIGHTS = "lowcarb_adapter.safetensors"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
FORMAT_NAME = "lowcarb-lora"
FORMAT_VERSION = 1

_ADAPTER_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_embedding_A", ".lora_embedding_B")


def _adapted_modules(keys: list[str]) -> list[str]:
    names = []
    for key in keys:
        for suffix in _ADAPTER_SUFFIXES:
            if key.endswith(suffix):
                names.append(key[: -len(suffix)])
    return list(dict.fromkeys(names))


def _saved_modules(keys: list[str], adapted: list[str]) -> list[str]:
    # Keys that are not adapter weights belong to modules trained in full (modules_to_save).
    names = []
    for key in keys:
        if any(key.endswith(s) for s in _ADAPTER_SUFFIXES):
            continue
        names.append(key.rpartition(".")[0])
    return [n for n in dict.fromkeys(names) if n not in adapted]


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = lora.adapter_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"adapter weights in {source} do not fit this model: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}; was it trained on another base?")
    with torch.no_grad():
        for key, tensor in state.items():
            param = model.get_parameter(key)
            if param.shape != tensor.shape:
                raise ValueError(f"adapter weight {key} in {source} has shape {tuple(tensor.shape)},"
                                 f" the model expects {tuple(param.shape)}; was it trained on "
                                 "another base?")
            param.copy_(tensor.to(param.dtype))


def save_adapter(model: nn.Module, folder: str | Path) -> Path:
    """Write the adapter (and modules_to_save) of a LoRA model in lowcarb's format."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = lora.config_of(model)
    state = lora.adapter_state_dict(model)
    save_file(state, str(folder / LOWCARB_WEIGHTS))
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": config.to_dict(),
            "modules": list(lora.lora_layers(model))}
    files.write_json(folder / LOWCARB_CONFIG, meta)
    return folder


def load_adapter(base: nn.Module, folder: str | Path) -> TransformSummary:
    """Put a saved adapter (lowcarb or PEFT format, detected from the files) onto a fresh base."""
    folder = Path(folder)
    if (folder / PEFT_CONFIG).exists() and not (folder / LOWCARB_CONFIG).exists():
        return load_peft(base, folder)
    if not (folder / LOWCARB_CONFIG).exists():
        raise ValueError(f"{folder} holds no adapter: expected {LOWCARB_CONFIG} (lowcarb) or "
                         f"{PEFT_CONFIG} (PEFT)")
    meta = json.loads((folder / LOWCARB_CONFIG).read_text())
    if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{folder / LOWCARB_CONFIG} is not a {FORMAT_NAME} v{FORMAT_VERSION} "
                         f"file (format={meta.get('format')!r}, version={meta.get('version')!r})")
    saved = LoraConfig.from_dict(meta["config"])
    state = load_file(str(folder / LOWCARB_WEIGHTS))
    # Re-target the exact module names written at save time; patterns could match differently.
    config = LoraConfig(r=saved.r, alpha=saved.alpha, dropout=saved.dropout,
                        target_modules=tuple(meta["modules"]), use_rslora=saved.use_rslora,
                        modules_to_save=saved.modules_to_save)
    summary = lora.apply(base, config)
    _load_weights(base, state, folder / LOWCARB_WEIGHTS)
    return summary


def save_peft(model: nn.Module, folder: str | Path, *, base_model_name_or_path: str | None = None,
              task_type: str | None = None) -> Path:
    """Write the adapter in PEFT's format, loadable with `PeftModel.from_pretrained(base, folder)`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = lora.config_of(model)
    state = {PEFT_PREFIX + k: v for k, v in lora.adapter_state_dict(model).items()}
    save_file(state, str(folder / PEFT_WEIGHTS), metadata={"format": "pt"})
    saved = _saved_modules([k.removeprefix(PEFT_PREFIX) for k in state],
                           list(lora.lora_layers(model)))
    peft_config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        # Full module names: PEFT matches list entries by name or "."-suffix, so this is exact.
        "target_modules": list(lora.lora_layers(model)),
        "modules_to_save": saved or None,
        "use_rslora": config.use_rslora,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": None,
        "layers_pattern": None,
        "revision": None,
    }
    files.write_json(folder / PEFT_CONFIG, peft_config)
    return folder


_UNSUPPORTED_PEFT = {
    "use_dora": (False, None),
    "rank_pattern": ({}, None),
    "alpha_pattern": ({}, None),
    "bias": ("none", None),
    "fan_in_fan_out": (False, None),
    "lora_bias": (False, None),
}


def load_peft(base: nn.Module, folder: str | Path) -> TransformSummary:
    """Put a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) onto a fresh base."""
    folder = Path(folder)
    config_path, weights_path = folder / PEFT_CONFIG, folder / PEFT_WEIGHTS
    if not config_path.exists() or not weights_path.exists():
        raise ValueError(f"{folder} is not a PEFT adapter folder: expected {PEFT_CONFIG} and "
                         f"{PEFT_WEIGHTS} (older .bin adapters: re-save them with PEFT)")
    meta = json.loads(config_path.read_text())
    if meta.get("peft_type") != "LORA":
        raise ValueError(f"{config_path} has peft_type={meta.get('peft_type')!r}; lowcarb reads "
                         "LoRA adapters only")
    for key, allowed in _UNSUPPORTED_PEFT.items():
        if key in meta and meta[key] not in allowed:
            raise ValueError(f"{config_path} sets {key}={meta[key]!r}, which lowcarb's LoRA does "
                             f"not support; re-train with {key}={allowed[0]!r}")
    raw = load_file(str(weights_path))
    bad = [k for k in raw if not k.startswith(PEFT_PREFIX)]
    if bad:
        raise ValueError(f"{weights_path} has keys without the {PEFT_PREFIX!r} prefix "
                         f"(e.g. {bad[0]!r}); it is not a PEFT LoRA adapter for a plain model")
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in raw.items()}
    adapted = _adapted_modules(list(state))
    if not adapted:
        raise ValueError(f"{weights_path} holds no lora_A/lora_B weights")
    config = LoraConfig(r=int(meta["r"]), alpha=float(meta["lora_alpha"]),
                        dropout=float(meta.get("lora_dropout") or 0.0),
                        target_modules=tuple(adapted),
                        modules_to_save=tuple(_saved_modules(list(state), adapted)),
                        use_rslora=bool(meta.get("use_rslora", False)))
    summary = lora.apply(base, config)
    _load_weights(base, state, weights_path)
    return summary
