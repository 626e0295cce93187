"""`lowcarb mutransfer RECIPE`: the recipe's `mutransfer:` section as a stored search run.

The recipe is an ordinary recipe (same schema as `lowcarb run`; `name:` names the run, `carbon:`
sets how it is measured) whose `mutransfer:` section holds the text files and the sweep. Relative
text paths are read from the recipe's folder. Every trial's ledger window is a footprint of the
run; the run's folder holds `mutransfer.json` (the full result) and the common `search.json` /
`search.html` / `search.md`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lowcarb.errors import ConfigError, MissingPathError, PathError
from lowcarb.files import check_writable_folder, write_json
from lowcarb.pipeline.recipe import Recipe, load_recipe
from lowcarb.pipeline.safe_yaml import load_yaml_file
from lowcarb.pipeline.stored_search import SearchRun, StoredSearch
from lowcarb.search.mup.charlm import corpus_from_files
from lowcarb.search.mup.mutransfer import Trial, mutransfer
from lowcarb.search.mup.section import DATA_KEYS, MutransferSection
from lowcarb.store.runstore import RunStore
from lowcarb.train.device import resolve_placement

RESULT_FILE = "mutransfer.json"
# Top-level keys of the format before muTransfer settings moved into a recipe section.
_OLD_FORMAT_KEYS = {*DATA_KEYS, *MutransferSection.model_fields} - {"model", "train"}


def load_mutransfer_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe with a `mutransfer:` section. A file in the old format (the settings at the
    top level) is refused with how to convert it."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"no recipe at {path}; give the path to a .yaml recipe file")
    try:
        recipe = load_recipe(path, overrides)
    except ConfigError as exc:
        _refuse_old_format(path, exc)
        raise
    if recipe.mutransfer is None:
        raise ConfigError(
            f"{path}: the recipe has no mutransfer: section; add one with text, model, "
            "proxy_width, target_width and log2_lrs (see `lowcarb mutransfer --help`)"
        )
    return recipe


def _refuse_old_format(path: Path, exc: ConfigError) -> None:
    try:
        raw = load_yaml_file(path, "recipe")  # the same limits: a hostile file is not re-read
    except ConfigError:
        return  # the file itself is broken: the first error says how
    if isinstance(raw, dict) and "mutransfer" not in raw and _OLD_FORMAT_KEYS & set(raw):
        moved = ", ".join(k for k in raw if k not in ("name", "description", "carbon"))
        raise ConfigError(
            f"{path}: muTransfer settings now live in a `mutransfer:` section of an ordinary "
            f"recipe; add the line `mutransfer:` and indent {moved} under it by two spaces "
            "(name:, description: and carbon: stay at the top level)"
        ) from exc


def mutransfer_recipe(
    recipe: Recipe,
    *,
    result_file: str | Path | None = None,
    out_dir: str | Path | None = None,
    store: RunStore | None = None,
    command: str | None = None,
    progress: Callable[[Trial], None] | None = None,
) -> StoredSearch:
    """Sweep the proxy, transfer, verify and account (lowcarb.search.mup.mutransfer), stored as a
    search run in `<out_dir>/<run id>/`; `result_file` also gets the full result."""
    section = recipe.mutransfer
    if section is None:
        raise ConfigError(f"{recipe.source}: the recipe has no mutransfer: section")
    placement = resolve_placement(recipe.device, recipe.precision)  # before any work
    if result_file is not None:  # checked before the sweep, not after it
        if Path(result_file).is_dir():
            raise PathError(f"--out {result_file} is a folder; give a file name ({RESULT_FILE})")
        check_writable_folder(Path(result_file).parent, "--out folder")
    folder = Path(recipe.source).parent if Path(recipe.source).is_file() else Path.cwd()
    text, val_text = section.data_paths(folder)
    corpus = corpus_from_files(text, val_text, section.column, section.limit)
    config = section.to_config()
    settings: dict[str, Any] = {
        "text": str(text),
        "val_text": None if val_text is None else str(val_text),
        "placement": placement.to_dict(),
    }
    with SearchRun(
        "mutransfer", recipe.name, recipe, settings=settings, store=store, command=command,
        out_dir=out_dir,
    ) as run:
        result = mutransfer(
            corpus, config, on_close=run.on_close, progress=progress, carbon=run.carbon,
            device=placement.device,
        )
        payload = result.to_dict()
        write_json(run.artifacts_dir / RESULT_FILE, payload, indent=1, non_finite="null")
        if result_file is not None:
            write_json(result_file, payload, indent=1, non_finite="null")
        return run.finish(
            result.to_search_result(recipe.name),
            tuning_energy_ratio=result.tuning_energy_ratio,
            loss_gap_pct=result.loss_gap_pct,
            result_file=str(result_file or run.artifacts_dir / RESULT_FILE),
        )
