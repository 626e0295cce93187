"""The runner: a validated recipe in, a stored run with an artifacts folder and a report out.

Every stage runs inside its own ledger window. After a stage that changes the model the model is
evaluated (in a window of its own, so the cost of producing a model and the cost of measuring it
stay apart), unless the recipe's next stage is `evaluate`, which does the same thing explicitly.

A crash, Ctrl-C, SIGTERM or SIGHUP keeps what finished: the finished stages stay in the store and
in metrics.json, the run is marked failed or interrupted, and a report of the finished part is
still written. Every file goes to a temporary name and is renamed (`lowcarb.files`): a full disk
fails the run with one line naming the file, and leaves no half-written report or metrics.json.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lowcarb import files
from lowcarb.errors import LowcarbError
from lowcarb.interrupts import Terminated, interrupt_on_signals
from lowcarb.measure import track
from lowcarb.measure.config import load_carbon_config
from lowcarb.measure.footprint import Footprint
from lowcarb.pipeline.context import RunContext, StageRecord
from lowcarb.pipeline.recipe import Recipe, StageStep
from lowcarb.pipeline.registry import get_stage
from lowcarb.pipeline.tasks import task_for
from lowcarb.store.runstore import RunStore
from lowcarb.train.batches import logits_of, model_device, model_inputs, to_device, to_host
from lowcarb.train.device import Placement, resolve_placement

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

    Artifacts go to `<out_dir>/<run id>/` (default `./lowcarb-runs/<run id>/`); a folder that
    cannot be written is a PathError before the run is recorded. `on_stage(record)` is called
    when a window finishes (the CLI prints progress with it). Ctrl-C, SIGTERM and SIGHUP are
    caught here: the run is marked interrupted and returned. Whatever happens, the stored run
    ends completed, failed or interrupted, never `running`.
    """
    store = store if store is not None else RunStore.default()
    carbon = load_carbon_config(**recipe.carbon.overrides())
    # The device and precision are resolved once, here, before any work: `device: cuda` on a
    # machine without one stops the run before it is created.
    placement = resolve_placement(recipe.device, recipe.precision)
    parent = files.check_writable_folder(
        out_dir if out_dir is not None else DEFAULT_OUT_DIR, "output folder (--out)"
    )
    settings = {
        "recipe": recipe.to_dict(),
        "source": recipe.source,
        "overrides": list(recipe.overrides),
        "placement": placement.to_dict(),
    }
    run_id = store.create_run("recipe", recipe.name, command=command, settings=settings)
    try:
        with interrupt_on_signals():
            return _execute(
                recipe, run_id, parent / run_id, store, carbon, placement, quiet, on_stage, shared
            )
    except BaseException as exc:
        # Something escaped the runner's own handling (a second Ctrl-C during the clean-up, an
        # artifacts folder that vanished): the stored run still gets an end.
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        with contextlib.suppress(Exception):
            store.finish_run(run_id, status, metrics={"error": _error_text(exc)})
        raise


def _execute(
    recipe: Recipe,
    run_id: str,
    artifacts: Path,
    store: RunStore,
    carbon: Any,
    placement: Placement,
    quiet: bool,
    on_stage: Callable[[StageRecord], None] | None,
    shared: dict[str, Any] | None,
) -> RunResult:
    with files.path_errors(artifacts):
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

    window = _Window(
        recipe, carbon, placement, artifacts, run_id, quiet, records, on_close, finish_record
    )
    ctx, status, error = _run_stages(window, shared)
    _close_records(records, status, error)
    run["stages"] = [r.to_dict() for r in records]
    for index, record in enumerate(records):
        if record.status != "completed":
            store.add_stage_result(run_id, index, record.label, record.to_dict())

    if status == "completed" and ctx is not None:
        try:
            run["model"] = _save_final_model(ctx, artifacts)
        except Exception as exc:
            status, error = "failed", f"saving the model failed: {_error_text(exc)}"
            _write_traceback(artifacts, exc)

    run["status"], run["error"], run["finished_at"] = status, error, _now()
    reports: dict[str, Path] = {}
    try:
        _write_json(artifacts / "metrics.json", run)
        reports = write_reports(run, artifacts, recipe.report)
        run["reports"] = {k: str(v) for k, v in reports.items()}
        _write_json(artifacts / "metrics.json", run)
    except Exception as exc:  # a full disk, or a report that cannot be drawn: the run still ends
        status = "failed"
        error = error or f"writing the run's files failed: {_error_text(exc)}"
        run["status"], run["error"] = status, error
        _write_traceback(artifacts, exc)
    store.finish_run(run_id, status, metrics=_run_metrics(run))
    return RunResult(run_id, status, artifacts, run, reports, error)


@dataclass(frozen=True)
class _Window:
    """What the stages of one run share: settings, folder, records and the store callbacks."""

    recipe: Recipe
    carbon: Any
    placement: Placement
    artifacts: Path
    run_id: str
    quiet: bool
    records: list[StageRecord]
    on_close: Callable[[Any], None]
    finish_record: Callable[[StageRecord], None]


def _run_stages(w: _Window, shared: dict[str, Any] | None) -> tuple[RunContext | None, str, str | None]:
    """Set up, check every stage against the model, run the stages: (ctx, status, error)."""
    ctx: RunContext | None = None
    status, error = "completed", None
    threads_before = torch.get_num_threads()
    if w.recipe.threads is not None:
        torch.set_num_threads(w.recipe.threads)
    try:
        ctx = _setup(w, shared)
        # Before any stage runs: a stage that cannot work on this model or data says so now,
        # not after an hour of training.
        for step in w.recipe.stages:
            spec = get_stage(step.name)
            if spec.check is not None:
                spec.check(ctx, step.config)
        steps = list(w.recipe.stages)
        for index, step in enumerate(steps):
            ctx = _run_step(ctx, step, w.on_close, w.finish_record)
            following = steps[index + 1] if index + 1 < len(steps) else None
            if get_stage(step.name).changes_model and (
                following is None or following.name != EVALUATE
            ):
                auto = StageStep(EVALUATE, f"{step.label}:evaluate", _evaluation_config(w.recipe))
                ctx = _run_step(ctx, auto, w.on_close, w.finish_record, auto=True)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP (lowcarb.interrupts)
        status, error = "interrupted", _interrupt_text(exc)
    except Exception as exc:  # a crash keeps the finished stages; a bug's traceback goes to a file
        status, error = "failed", _error_text(exc)
        _write_traceback(w.artifacts, exc)
    finally:
        torch.set_num_threads(threads_before)
    return ctx, status, error


def _setup(w: _Window, shared: dict[str, Any] | None) -> RunContext:
    """Load the data and build the model, in a ledger window of its own (it is work too)."""
    recipe = w.recipe
    setup = StageRecord("setup", "setup", {}, changes_model=False, model_version=0, auto=True)
    w.records.append(setup)
    with track("setup", unit="run", units=1, config=w.carbon, on_close=w.on_close) as fp:
        try:
            data, handle = task_for(recipe.task).load(recipe)
            handle.model.to(w.placement.device)  # the one place a run's model is placed
        finally:
            setup.footprint = fp
    setup.footprint = fp.to_dict()
    setup.status = "completed"
    setup.summary = {
        "task": recipe.task,
        "data": data.name,
        "sizes": data.sizes(),
        "model": str(recipe.model.name),
        **w.placement.to_dict(),
    }
    if handle.provenance:
        # Where quality figures appear, the report says the weights were quantized before.
        setup.summary["weights_note"] = handle.provenance
    w.finish_record(setup)
    return RunContext(
        recipe=recipe,
        data=data,
        handle=handle,
        carbon=w.carbon,
        artifacts_dir=w.artifacts,
        run_id=w.run_id,
        quiet=w.quiet,
        records=w.records,
        shared=dict(shared or {}),
        placement=w.placement,
    )


def _close_records(records: list[StageRecord], status: str, error: str | None) -> None:
    """Records still running when the run stopped get the run's status and error."""
    for record in records:
        if record.status == "running":
            record.status = status if status != "completed" else "failed"
            record.error = error
            if isinstance(record.footprint, Footprint):
                record.footprint = record.footprint.to_dict()


def _interrupt_text(exc: KeyboardInterrupt) -> str:
    if isinstance(exc, Terminated):
        return f"interrupted by {exc.signal_name} (the process was asked to stop)"
    return "interrupted by the user (Ctrl-C)"


def _error_text(exc: BaseException) -> str:
    """A user's error is its message, a file the system refused names the file; anything else
    is named by its type (it is a bug)."""
    if isinstance(exc, KeyboardInterrupt):
        return _interrupt_text(exc)
    if isinstance(exc, LowcarbError):
        return str(exc)
    io_error = files.os_error_of(exc)
    if io_error is not None and io_error.filename is not None:
        return files.os_error_message(io_error, io_error.filename)
    return f"{type(exc).__name__}: {exc}"


def _write_traceback(artifacts: Path, exc: BaseException) -> None:
    """error.txt for a bug (a user's error is its one-line message); never fails the run again."""
    io_error = files.os_error_of(exc)
    if isinstance(exc, LowcarbError) or (io_error is not None and io_error.filename is not None):
        return
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    with contextlib.suppress(OSError):
        files.write_text(artifacts / "error.txt", text)


def _evaluation_config(recipe: Recipe) -> Any:
    spec = get_stage(EVALUATE)
    return spec.config_model.model_validate({"splits": recipe.evaluation.splits})


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
    # A transformed model (lowrank, quantize, ...) is saved through its transform log.
    folder = artifacts / "model"
    # Written as a whole under a temporary name: a failed save leaves no half of a model.
    with files.replace_folder(folder) as tmp:
        written, loader = ctx.save_model(tmp)
        written = Path(written)
        ctx.task.save_extras(ctx, written)
    folder = folder / written.relative_to(tmp)
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
        inputs = model_inputs(batch)
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
