"""The run store: every run, footprint and stage result, behind one interface, two backends.

`RunStore(location)` opens the backend the location names: a file path is SQLite (stdlib sqlite3,
WAL; `lowcarb.store.sqlite`), a `postgresql://` URL is PostgreSQL (psycopg; `lowcarb.store.postgres`)
for a team or a multi-machine job. Both keep the same schema (`records.SCHEMA`) and the same
guarantees, which one conformance test suite checks on both:

- a window is committed when it closes (each write is its own transaction), so `kill -9` loses no
  closed window, and many writers at once lose nothing;
- a store that is not lowcarb's, is corrupted, or cannot be written is an error naming it; lowcarb
  never overwrites it;
- a read (`create=False`) creates nothing: no folder, no empty store; a read-only store can be read;
- a broken row (invalid JSON) is skipped with a warning naming the store and the row;
- a store that fills up keeps the footprints and stage results it could not save in memory, says
  so, and saves them at the next write; `finish_run` says clearly what is still unsaved.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from lowcarb.measure.footprint import Footprint
from lowcarb.store.pending import PendingWrites
from lowcarb.store.records import (
    RUN_STATUSES,
    STATUS_RANK,
    RunNotFound,
    RunRecord,
    StoreError,
    StoreFullError,
    StoreWarning,
    loads_or_warn,
    machine_info,
    now,
    record_from_row,
    to_json,
)

# Keys a stored footprint must have for the sums and exports to use it.
FOOTPRINT_KEYS = ("name", "id", "duration_s", "energy_j", "operational_g", "embodied_g", "total_g")
_RUN_COLUMNS = (
    "run_id, kind, name, status, started_at, ended_at, command, settings, metrics, "
    "artifacts_dir, exit_code, job_id"
)


class Transaction(Protocol):
    """What a backend's transaction offers: `?` placeholders, rows as tuples."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class RunStore(ABC):
    """The store interface. `RunStore(path_or_url)` returns the backend for the location."""

    location: str  # what the messages name: the file path, or the URL without its password
    readonly: bool
    schema_version: int

    def __new__(cls, location: Any = None, **kwargs: Any) -> RunStore:
        if cls is RunStore:
            from lowcarb.store.location import backend_for

            cls = backend_for(location)
        return super().__new__(cls)

    @classmethod
    def default(cls, *, create: bool = True, readonly: bool = False) -> RunStore:
        """The store that LOWCARB_STORE, lowcarb.toml's [store] or $LOWCARB_HOME/runs.db names."""
        from lowcarb.store.location import backend_for, default_location

        location = default_location()
        return backend_for(location)(location, create=create, readonly=readonly)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    @property
    def path(self) -> str | os.PathLike[str]:
        """Where the store is: the SQLite file's Path, or the URL without its password."""
        return self.location

    # -- what a backend provides -------------------------------------------------------------
    @abstractmethod
    def _transaction(self, doing: str, *, write: bool = False) -> AbstractContextManager[Transaction]:
        """A transaction; backend errors become StoreError (StoreFullError when full)."""

    @abstractmethod
    def _newest_first(self) -> str:
        """ORDER BY clause listing runs newest first, ties by insertion order."""

    # -- writes --------------------------------------------------------------------------------
    def _ensure_writable(self, doing: str) -> None:
        if self.readonly:
            raise StoreError(f"run store {self.location} was opened read-only; cannot do {doing}")

    def create_run(
        self,
        kind: str,
        name: str,
        *,
        command: str | None = None,
        settings: dict[str, Any] | None = None,
        artifacts_dir: str | os.PathLike[str] | None = None,
    ) -> str:
        if not kind or not name:
            raise ValueError("a run needs a kind and a name")
        self._ensure_writable("creating a run")
        self._flush_pending()
        for _ in range(20):
            run_id = secrets.token_hex(4)
            with self._transaction("creating a run", write=True) as tx:
                if tx.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)):
                    continue  # a collision: draw another id, never overwrite a run
                self._insert_run(tx, run_id, kind, name, command, settings, artifacts_dir, None)
                return run_id
        raise StoreError(f"run store {self.location}: could not allocate a unique run id")

    def _insert_run(
        self,
        tx: Transaction,
        run_id: str,
        kind: str,
        name: str,
        command: str | None,
        settings: dict[str, Any] | None,
        artifacts_dir: Any,
        job_id: str | None,
    ) -> None:
        tx.execute(
            "INSERT INTO runs (run_id, kind, name, status, started_at, command, settings, "
            "metrics, artifacts_dir, host, pid, machine, job_id) "
            "VALUES (?, ?, ?, 'running', ?, ?, ?, '{}', ?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id) DO NOTHING",
            (
                run_id,
                kind,
                name,
                now(),
                command,
                to_json(settings),
                str(artifacts_dir) if artifacts_dir is not None else None,
                socket.gethostname(),
                os.getpid(),
                to_json(machine_info()),
                job_id,
            ),
        )

    def join_job(
        self,
        job_id: str,
        kind: str,
        name: str,
        *,
        command: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> str:
        """The run of job `job_id` (created by the first process to join), with this process
        registered as one of its writers; the run ends when its last process finishes."""
        if not job_id:
            raise ValueError("join_job needs a job id")
        self._ensure_writable("joining a job")
        self._flush_pending()
        host, pid = socket.gethostname(), os.getpid()
        with self._transaction("joining a job", write=True) as tx:
            if not tx.execute("SELECT 1 FROM runs WHERE job_id = ?", (job_id,)):
                run_id = secrets.token_hex(4)
                while tx.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)):
                    run_id = secrets.token_hex(4)
                # Processes of a job start together: the first insert wins, the others' do nothing.
                self._insert_run(tx, run_id, kind, name, command, settings, None, job_id)
            ((run_id,),) = tx.execute("SELECT run_id FROM runs WHERE job_id = ?", (job_id,))
            tx.execute(
                "INSERT INTO run_processes (run_id, host, pid, status, started_at) "
                "VALUES (?, ?, ?, 'running', ?) ON CONFLICT (run_id, host, pid) DO UPDATE "
                "SET status = 'running', ended_at = NULL",
                (run_id, host, pid, now()),
            )
            # A job that had finished and is joined again (a restarted worker) runs again.
            tx.execute(
                "UPDATE runs SET status = 'running', ended_at = NULL WHERE run_id = ?", (run_id,)
            )
        return run_id

    def _require_run(self, tx: Transaction, run_id: str) -> None:
        if not tx.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)):
            raise RunNotFound(f"no run {run_id!r} in {self.location}; `lowcarb runs` lists the runs")

    def add_footprint(self, run_id: str, fp: Footprint | dict[str, Any]) -> int:
        """Save a closed window; its row id, or 0 when the store is full and it is kept for later."""
        data = fp.to_dict() if isinstance(fp, Footprint) else dict(fp)
        self._ensure_writable("saving a footprint")

        def insert() -> int:
            with self._transaction("saving a footprint", write=True) as tx:
                self._require_run(tx, run_id)
                rows = tx.execute(
                    "INSERT INTO footprints (run_id, window_id, parent, name, started_at, data) "
                    "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    (
                        run_id,
                        data["id"],
                        data.get("parent"),
                        data["name"],
                        data.get("started_at"),
                        json.dumps(data, default=str),
                    ),
                )
                return int(rows[0][0])

        return self._save_or_keep(f"window {data['name']!r} of run {run_id}", insert)

    def add_stage_result(self, run_id: str, index: int, stage: str, metrics: dict[str, Any]) -> None:
        self._ensure_writable("saving a stage result")

        def upsert() -> int:
            with self._transaction("saving a stage result", write=True) as tx:
                self._require_run(tx, run_id)
                tx.execute(
                    "INSERT INTO stage_results (run_id, idx, stage, metrics) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (run_id, idx) DO UPDATE SET stage = excluded.stage, "
                    "metrics = excluded.metrics",
                    (run_id, int(index), stage, to_json(metrics)),
                )
            return 1

        self._save_or_keep(f"stage result {stage!r} of run {run_id}", upsert)

    def _save_or_keep(self, what: str, write: Callable[[], int]) -> int:
        if not hasattr(self, "_pending"):
            self._pending = PendingWrites(self.location)
        return self._pending.save_or_keep(what, write)

    def _flush_pending(self) -> None:
        if hasattr(self, "_pending"):
            self._pending.flush()

    @property
    def unsaved(self) -> list[str]:
        """What a full store could not save yet (saved at the next successful write)."""
        return self._pending.unsaved if hasattr(self, "_pending") else []

    def finish_run(
        self,
        run_id: str,
        status: str,
        *,
        exit_code: int | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        """Mark a run finished. For a job's run, this process is finished: the run takes its
        final status (the worst of its processes') when the last one finishes."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
        self._ensure_writable("finishing a run")
        try:
            self._flush_pending()
        except StoreFullError as exc:
            raise StoreFullError(
                f"{exc}: run {run_id} finished ({status}) but {len(self.unsaved)} record(s) could "
                f"not be saved: {'; '.join(self.unsaved)}. They are in the run's own output "
                "(metrics.json) where it has one; the run stays 'running' in the store"
            ) from exc
        with self._transaction("finishing a run", write=True) as tx:
            self._require_run(tx, run_id)
            status = self._process_finished(tx, run_id, status)
            sets = "status = ?, ended_at = ?, exit_code = ?"
            params: list[Any] = [status, None if status == "running" else now(), exit_code]
            if metrics is not None:
                sets += ", metrics = ?"
                params.append(to_json(metrics))
            tx.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", (*params, run_id))

    def _process_finished(self, tx: Transaction, run_id: str, status: str) -> str:
        """Record this process's end in a job's run; the run's status after it."""
        if self.schema_version < 2:
            return status
        tx.execute(
            "UPDATE run_processes SET status = ?, ended_at = ? WHERE run_id = ? AND host = ? "
            "AND pid = ?",
            (status, now(), run_id, socket.gethostname(), os.getpid()),
        )
        statuses = [r[0] for r in tx.execute(
            "SELECT status FROM run_processes WHERE run_id = ?", (run_id,)
        )]
        if not statuses:
            return status  # not a job's run
        if "running" in statuses:
            return "running"
        return max(statuses, key=lambda s: STATUS_RANK.get(s, 2))

    def set_artifacts_dir(self, run_id: str, path: str | os.PathLike[str]) -> None:
        self._ensure_writable("setting the artifacts folder")
        with self._transaction("setting the artifacts folder", write=True) as tx:
            self._require_run(tx, run_id)
            tx.execute("UPDATE runs SET artifacts_dir = ? WHERE run_id = ?", (str(path), run_id))

    def delete_run(self, run_id_or_prefix: str, *, force: bool = False) -> dict[str, Any]:
        """Delete a run with its footprints, stage results and processes; what was deleted.

        A run still marked running whose writer may be alive is refused unless `force`: deleting
        it under a live writer would make that writer's next save fail. The artifacts folder on
        disk is not touched (its path is in the returned dict).
        """
        self._ensure_writable("deleting a run")
        run_id = self.resolve_id(run_id_or_prefix)
        record = self.get_run(run_id)
        if record.status == "running" and not force and not self.writer_gone(run_id):
            raise StoreError(
                f"run {run_id} is still running (or its writer cannot be checked from this "
                "machine); stop it first, or delete it anyway with --force"
            )
        with self._transaction("deleting a run", write=True) as tx:
            n_fp = tx.execute("SELECT count(*) FROM footprints WHERE run_id = ?", (run_id,))[0][0]
            n_st = tx.execute("SELECT count(*) FROM stage_results WHERE run_id = ?", (run_id,))[0][0]
            tables = ["footprints", "stage_results"]
            if self.schema_version >= 2:
                tables.append("run_processes")
            for table in tables:
                tx.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            tx.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        return {
            "run_id": run_id,
            "name": record.name,
            "footprints": int(n_fp),
            "stage_results": int(n_st),
            "artifacts_dir": record.artifacts_dir,
        }

    # -- reads ---------------------------------------------------------------------------------
    def _loads(self, text: str | None, what: str) -> Any:
        return loads_or_warn(text, what, self.location)

    def _record(self, row: Sequence[Any]) -> RunRecord:
        return record_from_row(row, self.location)

    def _run_columns(self) -> str:
        return _RUN_COLUMNS if self.schema_version >= 2 else _RUN_COLUMNS.replace(", job_id", "")

    def resolve_id(self, run_id_or_prefix: str) -> str:
        key = run_id_or_prefix.strip()
        if not key:
            raise RunNotFound("empty run id; `lowcarb runs` lists the runs")
        pattern = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._transaction("looking up a run") as tx:
            rows = tx.execute(
                "SELECT run_id FROM runs WHERE run_id = ? OR run_id LIKE ? ESCAPE '\\' "
                "ORDER BY run_id",
                (key, pattern),
            )
        ids = [r[0] for r in rows]
        if key in ids:
            return key
        if not ids:
            raise RunNotFound(f"no run {key!r} in {self.location}; `lowcarb runs` lists the runs")
        if len(ids) > 1:
            raise RunNotFound(
                f"run id prefix {key!r} is ambiguous ({', '.join(ids[:5])}); give more characters"
            )
        return ids[0]

    def get_run(self, run_id_or_prefix: str) -> RunRecord:
        run_id = self.resolve_id(run_id_or_prefix)
        with self._transaction("reading a run") as tx:
            (row,) = tx.execute(f"SELECT {self._run_columns()} FROM runs WHERE run_id = ?", (run_id,))
        return self._record(row)

    def list_runs(self, limit: int = 50) -> list[RunRecord]:
        with self._transaction("listing runs") as tx:
            rows = tx.execute(
                f"SELECT {self._run_columns()} FROM runs ORDER BY {self._newest_first()} LIMIT ?",
                (int(limit),),
            )
        return [self._record(r) for r in rows]

    def footprints(self, run_id: str) -> list[dict[str, Any]]:
        """The run's windows in the order they closed; broken rows skipped with a warning."""
        run_id = self.resolve_id(run_id)
        with self._transaction("reading footprints") as tx:
            rows = tx.execute("SELECT id, data FROM footprints WHERE run_id = ? ORDER BY id", (run_id,))
        out = []
        for row_id, text in rows:
            what = f"footprint row {row_id} of run {run_id}"
            data = self._loads(text, what)
            if data is None:
                continue
            if not isinstance(data, dict) or any(k not in data for k in FOOTPRINT_KEYS):
                warnings.warn(
                    StoreWarning(f"run store {self.location}: {what} lacks the ledger's fields; skipped"),
                    stacklevel=2,
                )
                continue
            out.append(data)
        return out

    def stage_results(self, run_id: str) -> list[dict[str, Any]]:
        run_id = self.resolve_id(run_id)
        with self._transaction("reading stage results") as tx:
            rows = tx.execute(
                "SELECT idx, stage, metrics FROM stage_results WHERE run_id = ? ORDER BY idx",
                (run_id,),
            )
        out = []
        for idx, stage, text in rows:
            metrics = self._loads(text, f"stage result {idx} ({stage!r}) of run {run_id}")
            if metrics is not None:
                out.append({"index": idx, "stage": stage, "metrics": metrics})
        return out

    def machine(self, run_id: str) -> dict[str, Any]:
        """The machine the run was created on (os, python, CPU, RAM)."""
        run_id = self.resolve_id(run_id)
        with self._transaction("reading a run") as tx:
            ((text, host),) = tx.execute("SELECT machine, host FROM runs WHERE run_id = ?", (run_id,))
        info = self._loads(text, f"the machine of run {run_id}")
        return {**(info if isinstance(info, dict) else {}), "host": host}

    def processes(self, run_id: str) -> list[dict[str, Any]]:
        """The processes of a job's run (host, pid, status); empty for other runs."""
        run_id = self.resolve_id(run_id)
        if self.schema_version < 2:
            return []
        with self._transaction("reading a run") as tx:
            rows = tx.execute(
                "SELECT host, pid, status, started_at, ended_at FROM run_processes "
                "WHERE run_id = ? ORDER BY started_at",
                (run_id,),
            )
        keys = ("host", "pid", "status", "started_at", "ended_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def writer_gone(self, run_id: str) -> bool:
        """True for a run still marked running whose processes on this host no longer exist
        (killed before they could finish the run: their closed windows are kept)."""
        import psutil

        run_id = self.resolve_id(run_id)
        with self._transaction("reading a run") as tx:
            ((status, host, pid),) = tx.execute(
                "SELECT status, host, pid FROM runs WHERE run_id = ?", (run_id,)
            )
        if status != "running":
            return False
        writers = [(p["host"], p["pid"]) for p in self.processes(run_id) if p["status"] == "running"]
        writers = writers or [(host, pid)]
        here = socket.gethostname()
        if any(h != here or p is None for h, p in writers):
            return False  # another machine's process cannot be checked from here
        return not any(psutil.pid_exists(p) for _, p in writers)

    def run_totals(self, run_id: str) -> dict[str, float]:
        """Energy and CO2e of a run: the sum over its top-level windows (nested ones, in this
        process or in a child process, are inside their parent)."""
        fps = self.footprints(run_id)
        ids = {f["id"] for f in fps}
        top = [f for f in fps if f.get("parent") not in ids]
        return {
            "windows": float(len(fps)),
            "duration_s": sum(f["duration_s"] for f in top),
            "energy_j": sum(f["energy_j"] for f in top),
            "operational_g": sum(f["operational_g"] for f in top),
            "embodied_g": sum(f["embodied_g"] for f in top),
            "gpu_embodied_g": sum(f.get("gpu_embodied_g") or 0.0 for f in top),
            "total_g": sum(f["total_g"] for f in top),
        }

    def iter_runs(self) -> Iterator[RunRecord]:
        """Every run, oldest first."""
        yield from reversed(self.list_runs(limit=1_000_000_000))

    # -- export --------------------------------------------------------------------------------
    def export_json(self, run_ids: list[str] | None = None) -> str:
        from lowcarb.store.export import to_json as export

        return export(self, run_ids)

    def export_csv(self, run_ids: list[str] | None = None, *, all_windows: bool = False) -> str:
        from lowcarb.store.export import to_csv

        return to_csv(self, run_ids, all_windows=all_windows)
