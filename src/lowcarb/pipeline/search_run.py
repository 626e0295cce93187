"""`lowcarb search RECIPE`: the recipe's `search:` section, one recipe run per trial.

Each trial applies its sampled values to the recipe (the same paths `--set` takes), runs it with
`run_recipe` (so every trial is an ordinary stored run with its own report) and hands the final
model's metrics to the search: `dev_accuracy`, `test_accuracy`, `per1k_total_g` (CO2e per 1,000
inferences), `latency_b1_p50_ms`, `params`, ... plus the run's own cost (`run_energy_j`,
`run_co2_g`). With pruning on, the train stage reports the dev quality after every epoch and a
poor trial stops there. The search itself is a stored run of kind `search`; every trial's ledger
window is one of its footprints, so its total is what the search cost.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lowcarb.errors import ConfigError
from lowcarb.pipeline.recipe import Recipe, apply_override, recipe_from_dict
from lowcarb.pipeline.runner import run_recipe
from lowcarb.pipeline.stored_search import SearchRun, StoredSearch
from lowcarb.search.hpo import (
    RESULT_FILE,
    SearchConfig,
    TrialContext,
    TrialStopped,
    run_search,
)
from lowcarb.search.space import CategoricalParam, FloatParam, IntParam
from lowcarb.search.storage import open_storage
from lowcarb.store.runstore import RunStore
from lowcarb.train.device import resolve_placement

# Quality metrics the runner reports per split; the pruner reads the dev split each epoch.
_SPLITS = ("dev_", "test_")


def search_recipe(
    recipe: Recipe,
    *,
    storage: str | None = None,
    study: str | None = None,
    n_trials: int | None = None,
    out_dir: str | Path | None = None,
    store: RunStore | None = None,
    command: str | None = None,
    on_trial: Callable[[int, str, Mapping[str, Any]], None] | None = None,
) -> StoredSearch:
    """Run (or, with a shared `storage` and `study`, join) the recipe's search.

    on_trial(number, status, params) is called after each trial this process ran (progress).
    """
    if recipe.search is None:
        raise ConfigError(
            f"{recipe.source}: the recipe has no search: section; add one naming params and "
            f"objectives (see `lowcarb search --help`)"
        )
    config = recipe.search.to_config(**({"n_trials": n_trials} if n_trials else {}))
    base = recipe.to_dict()
    base.pop("search", None)
    check_param_paths(base, config, recipe.source)
    pruning_key = _pruning_key(config, recipe.source)
    if storage is not None:
        open_storage(storage, ".")  # a bad URL or a server that is down fails before any run
    resolve_placement(recipe.device, recipe.precision)  # so does a device this machine lacks
    study_name = study or recipe.name
    settings = {
        "storage": "run folder (SQLite)" if storage is None else "shared",
        "study": study_name,
    }
    with SearchRun(
        "hpo", study_name, recipe, settings=settings, store=store, command=command, out_dir=out_dir
    ) as stored:
        trial = _trial_fn(recipe, base, config, pruning_key, stored, on_trial)
        result = run_search(
            trial,
            config,
            run_dir=stored.artifacts_dir,
            storage=storage,
            study_name=study_name,
            carbon=stored.carbon,
            on_trial_footprint=stored.on_close,
        )
        return stored.finish(result, result_file=str(stored.artifacts_dir / RESULT_FILE))


def _trial_fn(
    recipe: Recipe,
    base: Mapping[str, Any],
    config: SearchConfig,
    pruning_key: str,
    stored: SearchRun,
    on_trial: Callable[[int, str, Mapping[str, Any]], None] | None,
) -> Callable[[TrialContext], dict[str, float]]:
    """One trial: the recipe with the trial's values, run as an ordinary stored recipe run."""

    def trial(ctx: TrialContext) -> dict[str, float]:
        trial_recipe = recipe_for_trial(base, ctx.params, f"{recipe.source} (trial {ctx.number})")
        stopped: list[TrialStopped] = []

        def on_epoch(epoch: int, dev_metrics: Mapping[str, float]) -> None:
            if pruning_key in dev_metrics:
                try:
                    ctx.report(epoch, dev_metrics[pruning_key])
                except TrialStopped as exc:
                    stopped.append(exc)  # run_recipe records the run as failed; re-raised below
                    raise

        run = run_recipe(
            trial_recipe,
            out_dir=stored.artifacts_dir / "trials",
            quiet=True,
            store=stored.store,
            command=stored.command,
            shared={"on_epoch": on_epoch} if config.pruning is not None else None,
        )
        status = "stopped" if stopped else run.status
        if on_trial is not None:
            on_trial(ctx.number, status, ctx.params)
        if stopped:
            raise stopped[0]
        if run.status == "interrupted":
            raise KeyboardInterrupt
        if run.status != "completed":
            raise RuntimeError(f"run {run.run_id} {run.status}: {run.error}")
        return trial_metrics(run.run)

    return trial


def recipe_for_trial(base: Mapping[str, Any], params: Mapping[str, Any], source: str) -> Recipe:
    """The recipe with one trial's values applied at their paths (as `--set` would)."""
    data = copy.deepcopy(dict(base))
    for path, value in params.items():
        apply_override(data, path.split("."), value, source=source)
    return recipe_from_dict(data, source=source)


def check_param_paths(base: Mapping[str, Any], config: SearchConfig, source: str) -> None:
    """Fail before any trial runs when a parameter's path or range does not fit the recipe."""
    for name, param in config.space.params:
        probes: list[Any]
        if isinstance(param, CategoricalParam):
            probes = list(param.choices)
        elif isinstance(param, FloatParam | IntParam):
            probes = [param.low, param.high]
        else:  # pragma: no cover - the union is closed
            probes = []
        for value in probes:
            try:
                recipe_for_trial(base, {name: value}, source)
            except ValueError as exc:
                raise ConfigError(f"search.params.{name} = {value!r} does not fit: {exc}") from None


def trial_metrics(run: Mapping[str, Any]) -> dict[str, float]:
    """The final model's evaluation, plus what the trial's run cost in the ledger."""
    from lowcarb.report.summary import model_rows, totals

    rows = model_rows(run)
    if not rows:
        raise ConfigError(
            "the trial's recipe evaluates no model; end its stages with evaluate (or a stage "
            "that changes the model)"
        )
    out = {
        k: float(v)
        for k, v in rows[-1].metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    cost = totals(run)
    out["run_energy_j"] = cost["energy_j"]
    out["run_co2_g"] = cost["operational_g"] + cost["embodied_g"]
    out["run_duration_s"] = cost["duration_s"]
    return out


def _pruning_key(config: SearchConfig, source: str) -> str:
    metric = config.quality.metric
    if config.pruning is None:
        return metric
    for prefix in _SPLITS:
        if metric.startswith(prefix):
            return metric[len(prefix) :]
    raise ConfigError(
        f"{source}: search.pruning reads the dev split after every epoch, so the first objective "
        f"must be a dev_ or test_ metric (dev_accuracy, dev_macro_f1, dev_loss), got {metric!r}; "
        f"or set pruning: false"
    )
