"""Save and reload a model after pruning, low-rank and/or int8 transforms (a lowcarb model folder).

A transformed model no longer matches its architecture's constructor, so the folder holds:
- what ``lowcarb.models.save_model`` writes for the base model (``lowcarb_model.json``, the
  Hugging Face ``config.json`` and tokenizer files), but not its fp32 weights;
- ``compressed.json``: the early-bird pruned widths, the low-rank ranks, the quantization config
  and backend, and how to rebuild every state entry (int8 tensors, scales, packed tuples);
- ``compressed.safetensors``: every tensor. No pickles anywhere.

``load_compressed(folder)`` rebuilds the base model from the description, re-applies the structure
(pruned heads / neurons / channels, factorized layers of the saved ranks, then the same
quantization) and loads the tensors. The base weights file is deliberately absent, so loading
the folder as a plain model fails loudly instead of silently giving a randomly initialised network.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lowcarb.compress import lowrank, quantize
from lowcarb.errors import MissingPathError
from lowcarb.models import ModelHandle, build_reference_model, save_model

__all__ = ["COMPRESSED_FILE", "is_compressed", "load_compressed", "save_compressed"]

COMPRESSED_FILE = "compressed.json"
TENSORS_FILE = "compressed.safetensors"


def _fresh_base(handle: ModelHandle, hf_config: Any | None) -> nn.Module:
    """An fp32 model of the handle's base architecture (random weights, overwritten on load)."""
    if handle.family == "hf":
        from transformers import AutoModelForSequenceClassification

        if hf_config is None:
            raise ValueError("a Hugging Face base needs its config to be rebuilt")
        return AutoModelForSequenceClassification.from_config(hf_config)
    return build_reference_model(
        handle.config, handle.num_labels, handle.input_shape, handle.tokenizer
    )


def _example_spec(batch: Any) -> dict[str, Any] | None:
    if batch is None:
        return None
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return {
        k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
        for k, v in inputs.items()
    }


def _example_from_spec(spec: dict[str, Any] | None) -> dict[str, torch.Tensor] | None:
    if spec is None:
        return None
    # Tracing needs shapes and dtypes only; zeros are valid token ids and pixels.
    return {k: torch.zeros(v["shape"], dtype=getattr(torch, v["dtype"])) for k, v in spec.items()}


def save_compressed(
    handle: ModelHandle,
    folder: str | Path,
    *,
    ranks: dict[str, int] | None = None,
    quantize_config: dict[str, Any] | None = None,
    backend: str | None = None,
    example: Any = None,
) -> Path:
    """Write ``handle``'s transformed model into ``folder``.

    ranks: the low-rank factorization applied (``LowRankSummary.ranks``); read from the model when
        omitted (a traced static-int8 model no longer shows its factorized layers, so pass them).
    quantize_config / backend: ``QuantizeSummary.config`` / ``.backend`` when the model is int8.
    example: one input batch, required for static int8 (its shapes are kept to re-trace).
    """
    from safetensors.torch import save_file

    out = Path(folder)
    hf_config = getattr(handle.model, "config", None)
    if ranks is None:
        ranks = {n: m.rank for n, m in lowrank.factorized_modules(handle.model).items()}
    static = quantize_config is not None and quantize_config.get("mode") == "static"
    if static and example is None:
        raise ValueError("saving a static-int8 model needs example=<one input batch>")
    # The base description (config, tokenizer, labels) exactly as an fp32 model would have it...
    base = _fresh_base(handle, hf_config)
    save_model(dataclasses.replace(handle, model=base), out)
    # ...minus its (random) fp32 weights: only the compressed weights below are real.
    for weights in out.glob("*.safetensors"):
        weights.unlink()
    tensors, entries, versions = quantize.encode_state(handle.model)
    save_file(tensors, str(out / TENSORS_FILE))
    meta = {
        "format": 1,
        # A vocabulary-pruned embedding (lowcarb.compress.distill.vocab), rebuilt before loading.
        "vocab": _vocab_description(handle.model),
        # Early-bird pruned widths (lowcarb.prune.earlybird), rebuilt before loading.
        "pruned": _pruned_description(handle.model, base),
        "lowrank_ranks": ranks,
        "quantize": quantize_config,
        "backend": backend,
        "example": _example_spec(example) if static else None,
        "entries": entries,
        "versions": versions,
    }
    (out / COMPRESSED_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return out


def _vocab_description(model: nn.Module) -> dict[str, Any] | None:
    from lowcarb.compress.distill.vocab import CompactEmbedding, describe

    if any(isinstance(m, CompactEmbedding) for m in model.modules()):
        return describe(model)
    return None


def _pruned_description(model: nn.Module, base: nn.Module) -> dict[str, Any] | None:
    """The pruned structure when `model` is narrower than its freshly built base, else None."""
    from lowcarb.prune import earlybird

    try:
        pruned, full = earlybird.describe_structure(model), earlybird.describe_structure(base)
    except ValueError:
        return None  # neither a BERT-like encoder nor a CNN with BN: nothing was pruned
    if pruned == full:
        return None
    if pruned["kind"] != full["kind"] or (
        pruned["kind"] == "bn_channels" and set(pruned["channels"]) != set(full["channels"])
    ) or (pruned["kind"] == "bert" and len(pruned["heads"]) != len(full["heads"])):
        # e.g. a static-int8 trace that fused the BatchNorms away: the widths cannot be read
        # (a pruned model saved that way does not reload, and the runner's check says so).
        return None
    return pruned


def is_compressed(folder: str | Path) -> bool:
    return (Path(folder) / COMPRESSED_FILE).is_file()


def load_compressed(folder: str | Path) -> ModelHandle:
    """Rebuild a model saved by ``save_compressed``."""
    from safetensors.torch import load_file

    from lowcarb.models.serialize import DESCRIPTION_FILE, config_from_json

    src = Path(folder)
    if not is_compressed(src):
        raise MissingPathError(
            f"{src / COMPRESSED_FILE} not found: not a folder written by save_compressed"
        )
    meta = json.loads((src / COMPRESSED_FILE).read_text())
    desc = json.loads((src / DESCRIPTION_FILE).read_text())
    family = desc["family"]
    config = config_from_json(desc["config"])
    names = tuple(desc.get("label_names") or ())
    shape = tuple(desc["input_shape"]) if desc.get("input_shape") else None
    tokenizer: Any | None = None
    hf_config = None
    if family == "hf":
        from transformers import AutoConfig, AutoTokenizer

        hf_config = AutoConfig.from_pretrained(str(src), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    elif family == "transformer":
        if desc.get("tokenizer") == "saved":
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
        else:
            from lowcarb.models import ByteTokenizer

            tokenizer = ByteTokenizer()
    kind = "text" if family in ("hf", "transformer") else "image"
    handle = ModelHandle(
        nn.Identity(), tokenizer, kind, family, config, int(desc["num_labels"]), names, shape
    )
    model = _fresh_base(handle, hf_config)
    if meta.get("pruned"):
        from lowcarb.prune import earlybird

        earlybird.restore_structure(model, meta["pruned"])
    if meta.get("vocab"):
        from lowcarb.compress.distill import vocab

        vocab.restore(model, meta["vocab"])
    if meta.get("lowrank_ranks"):
        lowrank.restore(model, {str(k): int(v) for k, v in meta["lowrank_ranks"].items()})
    if meta.get("quantize"):
        cfg = quantize.config_from_dict(meta["quantize"])
        model = quantize.structure(
            model, cfg, meta["backend"], _example_from_spec(meta.get("example"))
        )
    tensors = load_file(str(src / TENSORS_FILE))
    model.load_state_dict(quantize.decode_state(meta["entries"], meta.get("versions", {}), tensors))
    model.eval()
    return dataclasses.replace(handle, model=model)
