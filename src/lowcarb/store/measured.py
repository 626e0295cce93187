"""Measure a command and save it as a run: what `lowcarb measure` calls (the CLI parses and
prints; the work is here).

    done = measure_and_save(store, ["python", "train.py"], unit="sample", units=60000)
    done.run_id, done.exit_code, done.footprint.total_g

The command's windows are saved as they close; windows the command opens itself (lowcarb.track
inside it) land in the same run, nested in its window. The run is finished by the command's exit
code, or `interrupted` (Ctrl-C, SIGTERM, SIGHUP) or `failed` on any other exit path, unless it
belongs to a parent process or job that finishes it.
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lowcarb.measure.command import check_command, measure_command
from lowcarb.measure.config import CarbonConfig
from lowcarb.measure.footprint import Footprint
from lowcarb.store.runstore import RunStore
from lowcarb.store.tracked import child_env, open_run

# What the run record keeps of the footprint (the windows keep everything).
RUN_METRICS = ("duration_s", "energy_j", "operational_g", "embodied_g", "total_g")


@dataclass(frozen=True)
class MeasuredCommand:
    run_id: str
    name: str
    exit_code: int
    footprint: Footprint


def _save_window(store: RunStore, run_id: str, fp: Footprint) -> None:
    store.add_footprint(run_id, fp)


def measure_and_save(
    store: RunStore,
    argv: Sequence[str],
    *,
    config: CarbonConfig,
    name: str | None = None,
    unit: str | None = None,
    units: float | None = None,
    on_measured: Callable[[MeasuredCommand], None] | None = None,
) -> MeasuredCommand:
    """Run `argv` in a ledger window saved into `store` as a `measure` run.

    `on_measured` gets the figures before the run is finished, so a caller shows them even when
    the store cannot take the last write (a full disk).
    """
    argv = list(argv)
    check_command(argv)
    name = name or argv[0].rsplit("/", 1)[-1]
    settings = {"config": dataclasses.asdict(config), "unit": unit, "units": units}
    # A new run; or the job's (LOWCARB_JOB); or, inside a tracked parent, the parent's run.
    run_id, owns = open_run(store, "measure", name, command=shlex.join(argv), settings=settings)

    def finish(status: str, exit_code: int | None = None, metrics: dict[str, Any] | None = None) -> None:
        if owns:  # an inherited run is finished by the process that started it
            store.finish_run(run_id, status, exit_code=exit_code, metrics=metrics)

    try:
        exit_code, fp = measure_command(
            argv,
            name=name,
            unit=unit,
            units=units,
            config=config,
            on_close=functools.partial(_save_window, store, run_id),
            # windows the command opens itself save into this run, nested in its window
            env=child_env(store, run_id),
        )
    except KeyboardInterrupt:  # Ctrl-C, and SIGTERM/SIGHUP (lowcarb.interrupts.Terminated)
        finish("interrupted", exit_code=130)
        raise
    except BaseException:
        finish("failed")
        raise
    done = MeasuredCommand(run_id, name, exit_code, fp)
    if on_measured is not None:
        on_measured(done)
    d = fp.to_dict()
    finish(
        "completed" if exit_code == 0 else "failed",
        exit_code=exit_code,
        metrics={k: d[k] for k in RUN_METRICS},
    )
    return done
