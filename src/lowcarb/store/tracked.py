"""`lowcarb.track`: a ledger window whose footprints are saved in the run store.

The outermost window in a context creates a run of kind "track"; windows nested inside it (same
thread or task) add their footprints to that run. `use_run(store, run_id)` makes windows opened
inside it save into an existing run instead (the pipeline runner uses it for user code in stages).
LOWCARB_NO_STORE=1 turns saving off.

Across processes:
- a job id (LOWCARB_JOB, or torchrun's TORCHELASTIC_RUN_ID) makes the outermost window join the
  job's run (`RunStore.join_job`): the processes and machines of one job share one run, each
  process's windows are top-level in it and sum without double counting;
- while an outermost window is open, the processes it starts inherit LOWCARB_PARENT_WINDOW,
  LOWCARB_RUN_ID and LOWCARB_STORE: their windows save into the same run, nested in it (its process
  tree already counts their work). `lowcarb measure` sets the same for the command it runs.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lowcarb.measure.config import CarbonConfig
from lowcarb.measure.footprint import Footprint
from lowcarb.measure.tracker import PARENT_WINDOW_ENV, Window
from lowcarb.store.records import RunNotFound, StoreWarning, job_id_from_env
from lowcarb.store.runstore import RunStore

RUN_ID_ENV = "LOWCARB_RUN_ID"
STORE_ENV = "LOWCARB_STORE"

_active_run: contextvars.ContextVar[tuple[RunStore, str] | None] = contextvars.ContextVar(
    "lowcarb_active_run", default=None
)


def active_run() -> tuple[RunStore, str] | None:
    """The (store, run id) that `lowcarb.track` windows opened here save into, if any."""
    return _active_run.get()


def store_disabled() -> bool:
    return os.environ.get("LOWCARB_NO_STORE", "").strip() not in ("", "0")


def child_env(store: RunStore, run_id: str, window_id: str | None = None) -> dict[str, str]:
    """What a child process needs to save its windows into `run_id` (nested in `window_id`:
    `lowcarb.measure.command.measure_command` adds that itself)."""
    location = getattr(store, "url", None) or store.location
    env = {RUN_ID_ENV: run_id, STORE_ENV: str(location)}
    if window_id is not None:
        env[PARENT_WINDOW_ENV] = window_id
    return env


def _inherited_run(store: RunStore) -> str | None:
    """The run a parent process named in LOWCARB_RUN_ID, if it is in `store`."""
    run_id = os.environ.get(RUN_ID_ENV, "").strip()
    if not run_id:
        return None
    try:
        return store.resolve_id(run_id)
    except RunNotFound:
        warnings.warn(
            StoreWarning(f"{RUN_ID_ENV}={run_id} is not a run of {store.location}; saving to a new run"),
            stacklevel=4,
        )
        return None


def open_run(
    store: RunStore,
    kind: str,
    name: str,
    *,
    command: str | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[str, bool]:
    """(run id, whether the caller finishes it) for work that starts a run in this process:

    - the run a parent process handed down (LOWCARB_RUN_ID in `store`): the parent finishes it;
    - else the run of this process's job (LOWCARB_JOB, TORCHELASTIC_RUN_ID), joined;
    - else a new run.
    """
    inherited = _inherited_run(store)
    if inherited is not None:
        return inherited, False
    job = job_id_from_env()
    if job is not None:
        return store.join_job(job, kind, job, command=command, settings=settings), True
    return store.create_run(kind, name, command=command, settings=settings), True


@contextmanager
def use_run(store: RunStore, run_id: str) -> Iterator[None]:
    """Inside this block, `lowcarb.track` windows save into `run_id` of `store`."""
    token = _active_run.set((store, store.resolve_id(run_id)))
    try:
        yield
    finally:
        _active_run.reset(token)


class StoredWindow(Window):
    def __init__(self, name: str, *, store: RunStore | None = None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._store = store
        self._user_on_close = kwargs.get("on_close")
        self._run_token: contextvars.Token[tuple[RunStore, str] | None] | None = None
        self._target: tuple[RunStore, str] | None = None
        self._owns_run = False
        self._saved_env: dict[str, str | None] | None = None

    def _save(self, fp: Footprint) -> None:
        if self._user_on_close is not None:
            self._user_on_close(fp)
        if self._target is not None:
            store, run_id = self._target
            store.add_footprint(run_id, fp)

    def __enter__(self) -> Footprint:
        self.on_close = self._save
        self._target = None
        if not store_disabled():
            active = _active_run.get()
            if active is None:
                active = self._open_run()
                self._run_token = _active_run.set(active)
            self._target = active
        try:
            fp = super().__enter__()
        except BaseException:
            self._finish("failed")
            raise
        if self._run_token is not None and self._target is not None:
            self._export_env(child_env(*self._target, fp.id))
        return fp

    def _open_run(self) -> tuple[RunStore, str]:
        """The run the outermost window saves into (see `open_run`)."""
        store = self._store if self._store is not None else RunStore.default()
        config = self.config
        settings = {"config": dataclasses.asdict(config)} if config is not None else {}
        run_id, self._owns_run = open_run(store, "track", self.name, settings=settings)
        return store, run_id

    def _export_env(self, values: dict[str, str]) -> None:
        # Subprocesses started inside the window inherit where and under what to save.
        self._saved_env = {k: os.environ.get(k) for k in values}
        os.environ.update(values)

    def _restore_env(self) -> None:
        for key, value in (self._saved_env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = None

    def _finish(self, status: str) -> None:
        if self._run_token is None:
            return
        store, run_id = self._target or (None, None)
        _active_run.reset(self._run_token)
        self._run_token = None
        self._restore_env()
        if self._owns_run and store is not None and run_id is not None:
            store.finish_run(run_id, status)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            super().__exit__(exc_type, exc, tb)
        finally:
            if exc is None:
                status = "completed"
            elif isinstance(exc, KeyboardInterrupt):
                status = "interrupted"
            else:
                status = "failed"
            self._finish(status)

    def _copy(self) -> StoredWindow:
        return StoredWindow(
            self.name,
            store=self._store,
            unit=self.unit,
            units=self.units,
            config=self.config,
            pid=self.pid,
            on_close=self._user_on_close,
        )


def track(
    name: str,
    *,
    unit: str | None = None,
    units: float | None = None,
    config: CarbonConfig | None = None,
    pid: int | None = None,
    on_close: Callable[[Footprint], None] | None = None,
    store: RunStore | None = None,
) -> StoredWindow:
    """`lowcarb.measure.track`, saving every footprint to the run store (default RunStore.default())."""
    return StoredWindow(
        name, store=store, unit=unit, units=units, config=config, pid=pid, on_close=on_close
    )
