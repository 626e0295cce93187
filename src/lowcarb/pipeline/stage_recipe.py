"""A recipe file with one stage guaranteed: what a verb built around one stage runs.

    recipe = recipe_with_stage("bert.yaml", "autodistil", {"flops_budget": 0.5}, ["train.lr=1e-4"])

`lowcarb autodistil RECIPE` runs the recipe with its `autodistil` stage, appended after the
recipe's stages (default: train, evaluate) when it has none; the verb's flags become that stage's
settings, applied like `--set stages.autodistil.KEY=VALUE`, so errors name them the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lowcarb.pipeline.recipe import Recipe, load_recipe, read_recipe_file, recipe_from_dict


def recipe_with_stage(
    path: str | Path,
    stage: str,
    settings: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> Recipe:
    """The recipe at `path` with `stage` appended when it has none, `settings` (None values are
    left out) applied to the first such stage, then `overrides`."""
    load_recipe(path, [])  # the usual one-line errors for a missing or broken file
    # Read as `lowcarb run` reads it: within the limits, data: paths from the recipe's folder.
    raw = read_recipe_file(path)
    stages = list(raw.get("stages") or ["train", "evaluate"])
    names = [next(iter(s)) if isinstance(s, Mapping) else s for s in stages]
    if stage not in names:
        stages.append(stage)
    raw["stages"] = stages
    from_settings = [
        f"stages.{stage}.{key}={value}" for key, value in (settings or {}).items() if value is not None
    ]
    return recipe_from_dict(raw, source=str(path), overrides=[*overrides, *from_settings])
