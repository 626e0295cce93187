"""`lowcarb parsec [RECIPE]`: the recipe's `parsec:` section on its `data:`, as a stored search run.

The search measures with the recipe's `carbon:` settings; its two windows (`<method>:search` and
`<method>:retrain`) are the run's footprints. The folder gets `result.json` (the full PARSEC
result: history, candidates, settings), `prior.json` (the learned distribution: a later search's
`warm_start`) and the common `search.json` / `search.html` / `search.md`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lowcarb.data import load_data
from lowcarb.files import write_json
from lowcarb.pipeline.recipe import Recipe
from lowcarb.pipeline.stored_search import SearchRun, StoredSearch
from lowcarb.search.ledger import SearchLedger
from lowcarb.search.parsec import ParsecRunConfig, parsec_space, run_parsec
from lowcarb.store.runstore import RunStore
from lowcarb.train.device import resolve_placement

# Where `lowcarb parsec` writes when --out is not given (a fixed folder: --warm-start reads it).
DEFAULT_FOLDER = "parsec-out"


def parsec_recipe(
    recipe: Recipe,
    *,
    folder: str | Path = DEFAULT_FOLDER,
    store: RunStore | None = None,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> StoredSearch:
    """Run the recipe's architecture search (its `parsec:` section, else the defaults); the
    chosen trial is the best retrained architecture."""
    config = recipe.parsec or ParsecRunConfig()
    placement = resolve_placement(recipe.device, recipe.precision)  # before any work
    data = load_data(recipe.data)
    parsec_space(data, config, recipe.data.max_length)  # a data/space mismatch fails before the run
    folder = Path(folder)
    name = f"{config.method}:{config.space}"
    settings = {
        "space": config.space,
        "parsec": recipe.to_dict().get("parsec"),
        "placement": placement.to_dict(),
    }
    with SearchRun(
        config.method, name, recipe, settings=settings, store=store, command=command, folder=folder
    ) as run:
        result = run_parsec(
            data,
            config,
            max_length=recipe.data.max_length,
            ledger=SearchLedger(run.carbon, run.on_close),
            progress=progress,
            device=placement.device,
            precision=placement.precision,
        )
        result.prior.save(folder / "prior.json")
        write_json(folder / "result.json", result.to_dict(), non_finite="null")
        best = result.best
        return run.finish(
            result.to_search_result(),
            dev_accuracy=best.dev_accuracy,
            test_accuracy=best.test_accuracy,
            params=best.params,
            search_energy_j=result.search_footprint.energy_j,
            retrain_energy_j=result.retrain_footprint.energy_j,
            result_file=str(folder / "result.json"),
            prior_file=str(folder / "prior.json"),
        )
