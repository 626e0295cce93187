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
import datetime as _dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowcarb.errors import ConfigError
from lowcarb.measure.config import load_carbon_config
from lowcarb.pipeline.recipe import Recipe, apply_override, recipe_from_dict
from lowcarb.pipeline.runner import DEFAULT_OUT_DIR, run_recipe
from lowcarb.search.hpo import (
    RESULT_FILE,
    SearchConfig,
    SearchResult,
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


@dataclass(frozen=True)
class RecipeSearch:
    """What `search_recipe` returns: the stored search run and the study's summary."""

    run_id: str
    artifacts_dir: Path
    result: SearchResult


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
) -> RecipeSearch:
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
    store = store if store is not None else RunStore.default()
    carbon = load_carbon_config(**recipe.carbon.overrides())
    study_name = study or recipe.name
    settings = {
        "recipe": recipe.to_dict(),
        "source": recipe.source,
        "storage": "run folder (SQLite)" if storage is None else "shared",
        "study": study_name,
    }
    run_id = store.create_run("search", study_name, command=command, settings=settings)
    artifacts = (Path(out_dir) if out_dir is not None else Path(DEFAULT_OUT_DIR)) / run_id
    artifacts.mkdir(parents=True, exist_ok=True)
    store.set_artifacts_dir(run_id, artifacts.resolve())

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
            out_dir=artifacts / "trials",
            quiet=True,
            store=store,
            command=command,
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

    status = "failed"
    result: SearchResult | None = None
    try:
        result = run_search(
            trial,
            config,
            run_dir=artifacts,
            storage=storage,
            study_name=study_name,
            carbon=carbon,
            on_trial_footprint=lambda fp: store.add_footprint(run_id, fp),
        )
        status = "completed"
        from lowcarb.report.search import render_search_html, search_section_markdown

        (artifacts / "search.html").write_text(render_search_html(result), encoding="utf-8")
        (artifacts / "search.md").write_text(search_section_markdown(result), encoding="utf-8")
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        metrics: dict[str, Any] = {"finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat()}
        if result is not None:
            metrics.update(
                counts=result.counts(),
                chosen=result.chosen,
                pareto=list(result.pareto),
                total=result.total,
                result_file=str(artifacts / RESULT_FILE),
            )
        store.finish_run(run_id, status, metrics=metrics)
    return RecipeSearch(run_id, artifacts, result)


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
