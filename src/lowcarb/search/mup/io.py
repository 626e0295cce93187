"""Save and reload a muP model with its base shapes: `model.safetensors` + `mup.json`."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from lowcarb import files
from lowcarb.errors import MissingPathError, ModelError
from lowcarb.search.mup.config import MupModelConfig
from lowcarb.search.mup.models import construct
from lowcarb.search.mup.shapes import (
    get_base_shapes,
    set_base_shapes,
    shapes_from_json,
    shapes_to_json,
)

WEIGHTS = "model.safetensors"
META = "mup.json"


def save(model: nn.Module, folder: str | Path) -> Path:
    """Write the weights, the model config and the base shapes into `folder`."""
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, MupModelConfig):
        raise ModelError("save() needs a model built by lowcarb.search.mup.build_model")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    meta = {
        "format": "lowcarb.mup/1",
        "config": cfg.to_dict(),
        "base_shapes": shapes_to_json(get_base_shapes(model)),
    }
    files.write_json(folder / META, meta, indent=1)
    return folder


def load(folder: str | Path) -> nn.Module:
    """Rebuild a saved model; its base shapes come from the file, not from a rebuilt base model."""
    folder = Path(folder)
    if not (folder / META).exists() or not (folder / WEIGHTS).exists():
        raise MissingPathError(
            f"{folder} is not a saved muP model (expected {META} and {WEIGHTS}); "
            "write one with lowcarb.search.mup.save(model, folder)"
        )
    meta = json.loads((folder / META).read_text())
    model = construct(MupModelConfig.from_dict(meta["config"]))
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    set_base_shapes(model, shapes_from_json(meta["base_shapes"]))
    return model
