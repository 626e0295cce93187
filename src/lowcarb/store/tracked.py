"""`lowcarb.track`: a ledger window whose footprints are saved in the run store.

The outermost window in a context creates a run of kind "track"; windows nested inside it (same
thread or task) add their footprints to that run. `use_run(store, run_id)` makes windows opened
inside it save into an existing run instead (the pipeline runner uses it for user code in stages).
LOWCARB_NO_STORE=1 turns saving off.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lowcarb.measure.config import CarbonConfig
from lowcarb.measure.footprint import Footprint
from lowcarb.measure.tracker import Window
from lowcarb.store.runstore import RunStore

_active_run: contextvars.ContextVar[tuple[RunStore, str] | None] = contextvars.ContextVar(
    "lowcarb_active_run", default=None
)


def store_disabled() -> bool:
    return os.environ.get("LOWCARB_NO_STORE", "").strip() not in ("", "0")


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
                store = self._store if self._store is not None else RunStore.default()
                config = self.config
                settings = {"config": dataclasses.asdict(config)} if config is not None else {}
                run_id = store.create_run("track", self.name, settings=settings)
                active = (store, run_id)
                self._run_token = _active_run.set(active)
            self._target = active
        try:
            return super().__enter__()
        except BaseException:
            self._finish("failed")
            raise

    def _finish(self, status: str) -> None:
        if self._run_token is None:
            return
        store, run_id = self._target or (None, None)
        _active_run.reset(self._run_token)
        self._run_token = None
        if store is not None and run_id is not None:
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
