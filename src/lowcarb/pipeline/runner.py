"""The runner: a validated recipe in, a stored run with an artifacts folder and a report out.

Every stage runs inside its own ledger window. After a stage that changes the model the model is
evaluated (in a window of its own, so the cost of producing a model and the cost of measuring it
stay apart), unless the recipe's next stage is `evaluate`, which does the same thing explicitly.

A crash or Ctrl-C keeps what finished: the finished stages stay in the store and in metrics.json,
the run is marked failed or interrupted, and a report of the finished part is still written.
"""

from __future__ import annotations

import datetime as _dt
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lowcarb import files
from lowcarb.data import load_data
from lowcarb.measure import track
from lowcarb.measure.config import load_carbon_config
from lowcarb.models import build_model, load_model, save_model
from lowcarb.pipeline.context import RunContext, StageRecord
from lowcarb.pipeline.recipe import Recipe, StageStep
from lowcarb.pipeline.registry import get_stage
from lowcarb.store.runstore import RunStore
from lowcarb.train.batches import logits_of, model_device, to_device, to_host
from lowcarb.train.device import resolve_placement

EVALUATE = "evaluate"
# Artifacts go to ./lowcarb-runs/<run id>/ unless --out names another parent folder.
DEFAULT_OUT_DIR = "lowcarb-runs"


@dataclass
class RunResult:
    """What `run_recipe` returns: the run as stored, and where its files are."""

    run_id: str
    status: str  # completed, failed, interrupted
    artifacts_dir: Path
    run: dict[str, Any]
    reports: dict[str, Path] = field(default_factory=dict)
    error: str | None = None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_recipe(
    recipe: Recipe,
    *,
    out_dir: str | Path | None = None,
    quiet: bool = False,
    store: RunStore | None = None,
    on_stage: Callable[[StageRecord], None] | None = None,
    command: str | None = None,
    shared: dict[str, Any] | None = None,
) -> RunResult:
    """Run every stage of `recipe`; store the run; write model, metrics.json and the report.

    `shared` seeds `ctx.shared` (for example `on_epoch`, which `lowcarb search` sets to report
    each epoch's dev quality and stop a poor trial).

    Artifacts go to `<out_dir>/<run id>/` (default `./lowcarb-runs/<run id>/`).
    `on_stage(record)` is called when a window finishes (the CLI prints progress with it).
    A KeyboardInterrupt is caught here: the run is marked interrupted and returned.
    """
    store = store if store is not None else RunStore.default()
    carbon = load_carbon_config(**recipe.carbon.overrides())
    # The device and precision are resolved once, here, before any work: `device: cuda` on a
    # machine without one stops the run before it is created.
    placement = resolve_placement(recipe.device, recipe.precision)
    settings = {
        "recipe": recipe.to_dict(),
        "source": recipe.source,
        "overrides": list(recipe.overrides),
        "placement": placement.to_dict(),
    }
    run_id = store.create_run("recipe", recipe.name, command=command, settings=settings)
    artifacts = (Path(out_dir) if out_dir is not None else Path(DEFAULT_OUT_DIR)) / run_id
    artifacts.mkdir(parents=True, exist_ok=True)
    store.set_artifacts_dir(run_id, artifacts.resolve())

    run: dict[str, Any] = {
        "id": run_id,
        "name": recipe.name,
        "kind": "recipe",
        "status": "running",
        "started_at": _now(),
        "finished_at": None,
        "source": recipe.source,
        "overrides": list(recipe.overrides),
        "recipe": recipe.to_dict(),
        # Where it ran: device, its name, precision (the report shows them with the threads).
        "placement": placement.to_dict(),
        "threads": recipe.threads if recipe.threads is not None else torch.get_num_threads(),
        "stages": [],
        "model": None,
        "error": None,
    }
    records: list[StageRecord] = []

    def on_close(fp: Any) -> None:
        store.add_footprint(run_id, fp)

    def finish_record(record: StageRecord) -> None:
        run["stages"] = [r.to_dict() for r in records]
        store.add_stage_result(run_id, records.index(record), record.label, record.to_dict())
        _write_json(artifacts / "metrics.json", run)
        if on_stage is not None:
            on_stage(record)

    ctx: RunContext | None = None
    status, error = "completed", None
    threads_before = torch.get_num_threads()
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    try:
        # Loading data and building the model is work too: it gets a window of its own.
        setup = StageRecord("setup", "setup", {}, changes_model=False, model_version=0, auto=True)
        records.append(setup)
        with track("setup", unit="run", units=1, config=carbon, on_close=on_close) as fp:
            try:
                data = load_data(recipe.data)
                handle = build_model(recipe.model, data, seed=recipe.train.seed)
                handle.model.to(placement.device)  # the one place a run's model is placed
            finally:
                setup.footprint = fp
        setup.footprint = fp.to_dict()
        setup.status = "completed"
        setup.summary = {
            "data": data.name,
            "sizes": data.sizes(),
            "model": str(recipe.model.name),
            **placement.to_dict(),
        }
        finish_record(setup)
        ctx = RunContext(
            recipe=recipe,
            data=data,
            handle=handle,
            carbon=carbon,
            artifacts_dir=artifacts,
            run_id=run_id,
            quiet=quiet,
            records=records,
            shared=dict(shared or {}),
            placement=placement,
        )
        steps = list(recipe.stages)
        for index, step in enumerate(steps):
            ctx = _run_step(ctx, step, on_close, finish_record)
            following = steps[index + 1] if index + 1 < len(steps) else None
            if get_stage(step.name).changes_model and (
                following is None or following.name != EVALUATE
            ):
                auto = StageStep(EVALUATE, f"{step.label}:evaluate", _evaluation_config(recipe))
                ctx = _run_step(ctx, auto, on_close, finish_record, auto=True)
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user (Ctrl-C)"
    except Exception as exc:  # a crash keeps the finished stages; the traceback goes to a file
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        files.write_text(artifacts / "error.txt", traceback.format_exc())
    finally:
        torch.set_num_threads(threads_before)

    for record in records:
        if record.status == "running":
            record.status = status if status != "completed" else "failed"
            record.error = error
            if not isinstance(record.footprint, dict) and record.footprint is not None:
                record.footprint = record.footprint.to_dict()
    run["stages"] = [r.to_dict() for r in records]
    for index, record in enumerate(records):
        if record.status != "completed":
            store.add_stage_result(run_id, index, record.label, record.to_dict())

    if status == "completed" and ctx is not None:
        try:
            run["model"] = _save_final_model(ctx, artifacts)
        except Exception as exc:
            status, error = "failed", f"saving the model failed: {type(exc).__name__}: {exc}"
            files.write_text(artifacts / "error.txt", traceback.format_exc())

    run["status"], run["error"], run["finished_at"] = status, error, _now()
    _write_json(artifacts / "metrics.json", run)
    reports: dict[str, Path] = {}
    try:
        reports = write_reports(run, artifacts, recipe.report)
        run["reports"] = {k: str(v) for k, v in reports.items()}
    finally:
        # Even if the report cannot be drawn, the run is closed in the store with its stages.
        _write_json(artifacts / "metrics.json", run)
        store.finish_run(run_id, status, metrics=_run_metrics(run))
    return RunResult(run_id, status, artifacts, run, reports, error)


def _evaluation_config(recipe: Recipe) -> Any:
    spec = get_stage(EVALUATE)
    return spec.config_model.model_validate({})


def _run_step(
    ctx: RunContext,
    step: StageStep,
    on_close: Callable[[Any], None],
    finish_record: Callable[[StageRecord], None],
    *,
    auto: bool = False,
) -> RunContext:
    spec = get_stage(step.name)
    record = StageRecord(
        label=step.label,
        name=step.name,
        settings=step.settings(),
        changes_model=spec.changes_model,
        model_version=ctx.model_version,
        auto=auto,
    )
    ctx.records.append(record)
    ctx.current = record
    with track(step.label, config=ctx.carbon, on_close=on_close) as fp:
        try:
            result = spec.fn(ctx, step.config)
        finally:
            # Kept even when the stage fails, so the ledger shows what the failed stage cost.
            record.footprint = fp
    if not isinstance(result, RunContext):
        raise TypeError(
            f"stage {step.name!r} ({spec.fn.__module__}) returned {type(result).__name__}; "
            "a stage must return the RunContext it was given"
        )
    ctx = result
    record.footprint = fp.to_dict()
    if spec.changes_model:
        ctx.model_version += 1
        record.model_version = ctx.model_version
    record.status = "completed"
    ctx.current = None
    finish_record(record)
    return ctx


def _save_final_model(ctx: RunContext, artifacts: Path) -> dict[str, Any]:
    """Save the final model (safetensors + description) and check the folder reloads it."""
    # A stage that changes the architecture (lowrank, quantize) puts in ctx.shared how to save
    # and rebuild the model: "save_model": (ctx, folder) -> folder, "load_model": folder -> handle.
    saver = ctx.shared.get("save_model")
    folder = saver(ctx, artifacts / "model") if saver else save_model(ctx.handle, artifacts / "model")
    ctx.data.save_label_map(folder / "label_map.json")
    loader = ctx.shared.get("load_model", load_model)
    info: dict[str, Any] = {
        "path": str(folder),
        # The function that rebuilds the model from the folder (for the user and the report).
        "load_with": f"{loader.__module__}.{loader.__qualname__}",
        "reloads": False,
        "reload_error": None,
    }
    # A folder that does not reload is worse than none: check it, and say so when it does not
    # (a transform that changes the architecture must also describe how to rebuild it).
    try:
        reloaded = loader(folder)
        batch = next(iter(ctx.loader("dev", batch_size=4)))
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        # Compared where the run's model is (the folder loads onto the CPU), in fp32.
        device = model_device(ctx.model)
        reloaded.model.to(device)
        inputs = to_device(inputs, device)
        ctx.model.eval()
        reloaded.model.eval()
        with torch.inference_mode():
            a = to_host(logits_of(ctx.model(**inputs))).float()
            b = to_host(logits_of(reloaded.model(**inputs))).float()
        info["reloads"] = bool(torch.allclose(a, b, atol=1e-4, rtol=1e-4))
        if not info["reloads"]:
            info["reload_error"] = "reloaded model gives different outputs"
    except Exception as exc:
        info["reload_error"] = f"{type(exc).__name__}: {exc}"
    return info


def _run_metrics(run: dict[str, Any]) -> dict[str, Any]:
    """The run-level metrics stored with the run: the final model's evaluation and the totals."""
    from lowcarb.report.summary import model_rows, totals

    rows = model_rows(run)
    out: dict[str, Any] = {"totals": totals(run), "error": run.get("error")}
    out["model"] = run.get("model")
    out["reports"] = run.get("reports")
    if rows:
        out["final"] = dict(rows[-1].metrics)
        out["final_label"] = rows[-1].label
    return out


def write_reports(run: dict[str, Any], folder: Path, which: str = "both") -> dict[str, Path]:
    """Write report.html and/or report.md for a run dict into `folder`."""
    from lowcarb.report import render_html, render_markdown

    out: dict[str, Path] = {}
    if which in ("html", "both"):
        out["html"] = files.write_text(folder / "report.html", render_html(run))
    if which in ("md", "both"):
        out["md"] = files.write_text(folder / "report.md", render_markdown(run))
    return out


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    # Written to a temporary name and renamed: a crash or a full disk mid-write must not leave a
    # truncated metrics.json. A non-finite metric (a ratio over zero) is written as null: JSON
    # has no Infinity, and other readers of the file would reject it.
    files.write_json(path, payload, non_finite="null")
