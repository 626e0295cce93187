"""The run store: every run, footprint and stage result, in SQLite (stdlib sqlite3, WAL).

Durability: each write is its own committed transaction, so a window closed before a crash (even
kill -9) is on disk. WAL lets readers and several writer processes work at once; writers wait for
each other (busy timeout) instead of failing. A file that is not a lowcarb store, or is corrupted,
or cannot be written, raises StoreError naming the path and what to do; it is never overwritten.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowcarb.errors import LowcarbError
from lowcarb.measure.footprint import Footprint

# "LOWC" as a big-endian int: marks a file as a lowcarb store (PRAGMA application_id).
APPLICATION_ID = 0x4C4F5743
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0
RUN_STATUSES = ("running", "completed", "failed", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    command TEXT,
    settings TEXT,
    metrics TEXT,
    artifacts_dir TEXT,
    exit_code INTEGER,
    host TEXT,
    pid INTEGER,
    machine TEXT
);
CREATE TABLE IF NOT EXISTS footprints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    window_id TEXT NOT NULL,
    parent TEXT,
    name TEXT NOT NULL,
    started_at TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS footprints_run ON footprints(run_id);
CREATE TABLE IF NOT EXISTS stage_results (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    idx INTEGER NOT NULL,
    stage TEXT NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
"""


class StoreError(LowcarbError, ValueError):
    """The run store cannot be used; the message names the file and the fix."""


class RunNotFound(StoreError):
    """No run (or more than one) matches the id or prefix given."""


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    kind: str
    name: str
    status: str
    started_at: str
    ended_at: str | None
    command: str | None
    settings: dict[str, Any]
    metrics: dict[str, Any]
    artifacts_dir: str | None
    exit_code: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "command": self.command,
            "settings": self.settings,
            "metrics": self.metrics,
            "artifacts_dir": self.artifacts_dir,
            "exit_code": self.exit_code,
        }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def default_store_path() -> Path:
    """$LOWCARB_HOME/runs.db, else ~/.lowcarb/runs.db."""
    home = os.environ.get("LOWCARB_HOME")
    return (Path(home) if home else Path.home() / ".lowcarb") / "runs.db"


def machine_info() -> dict[str, Any]:
    """What the export's machine columns need, captured when the run is created."""
    import platform

    import psutil

    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass  # no /proc/cpuinfo (not Linux): the CPU model stays unknown
    return {
        "os": platform.platform(),
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "ram_total_size_gb": round(psutil.virtual_memory().total / 1e9, 3),
    }


def _json(value: Any) -> str:
    return json.dumps(value if value is not None else {}, default=str, sort_keys=True)


class RunStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._init()

    @classmethod
    def default(cls) -> RunStore:
        return cls(default_store_path())

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # -- connection ----------------------------------------------------------------------------
    def _fail(self, exc: BaseException, doing: str) -> StoreError:
        msg = str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and (
            "not a database" in msg or "malformed" in msg or "corrupt" in msg
        ):
            return StoreError(
                f"run store {self.path} is corrupted or not an SQLite file ({msg}); lowcarb will "
                "not overwrite it: move it aside, or use another store (--store PATH or LOWCARB_HOME)"
            )
        if isinstance(exc, (PermissionError, sqlite3.OperationalError)) and (
            "readonly" in msg or "unable to open" in msg or "ermission" in msg or "read-only" in msg
        ):
            return StoreError(
                f"run store {self.path} is not writable ({msg}) while {doing}; fix the permissions "
                "or use another store (--store PATH or LOWCARB_HOME)"
            )
        return StoreError(f"run store {self.path}: {msg} while {doing}")

    @contextmanager
    def _connect(self, doing: str, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        # A connection per operation: safe across threads and forks, and cheap next to a window.
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise self._fail(exc, doing) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            # FULL: each committed window is fsynced; windows close rarely, so this costs little.
            conn.execute("PRAGMA synchronous = FULL")
            if write:
                conn.execute("BEGIN IMMEDIATE")
            yield conn
            if write:
                conn.execute("COMMIT")
        except StoreError:
            if write and conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        except sqlite3.Error as exc:
            if write and conn.in_transaction:
                conn.execute("ROLLBACK")
            raise self._fail(exc, doing) from exc
        finally:
            conn.close()

    def _init(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the run store folder {self.path.parent} ({exc}); "
                "set LOWCARB_HOME or --store to a writable place"
            ) from exc
        if self.path.is_dir():
            raise StoreError(f"run store {self.path} is a folder; give a file path (runs.db)")
        with self._connect("opening the store") as conn:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables and app_id != APPLICATION_ID:
                raise StoreError(
                    f"{self.path} is an SQLite database but not a lowcarb run store; lowcarb will "
                    "not modify it: use another path (--store PATH or LOWCARB_HOME)"
                )
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"run store {self.path} was written by a newer lowcarb (schema {version}); "
                    "upgrade lowcarb or use another store"
                )
            if not tables or version < SCHEMA_VERSION:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"run store {self.path}: cannot enable WAL (got {mode})")
                # One transaction: two processes creating the same new store do not interleave.
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            # A quick structural check catches a damaged file before we write into it.
            ok = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if ok != "ok":
                raise StoreError(
                    f"run store {self.path} is corrupted ({ok}); lowcarb will not overwrite it: "
                    "move it aside or use another store (--store PATH or LOWCARB_HOME)"
                )

    # -- writes --------------------------------------------------------------------------------
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
        for _ in range(20):
            run_id = secrets.token_hex(4)
            try:
                with self._connect("creating a run", write=True) as conn:
                    conn.execute(
                        "INSERT INTO runs (run_id, kind, name, status, started_at, command, "
                        "settings, metrics, artifacts_dir, host, pid, machine) "
                        "VALUES (?, ?, ?, 'running', ?, ?, ?, '{}', ?, ?, ?, ?)",
                        (
                            run_id,
                            kind,
                            name,
                            _now(),
                            command,
                            _json(settings),
                            str(artifacts_dir) if artifacts_dir is not None else None,
                            socket.gethostname(),
                            os.getpid(),
                            _json(machine_info()),
                        ),
                    )
                return run_id
            except StoreError as exc:
                if "UNIQUE" not in str(exc):
                    raise
        raise StoreError(f"run store {self.path}: could not allocate a unique run id")

    def _require_run(self, conn: sqlite3.Connection, run_id: str) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            raise RunNotFound(f"no run {run_id!r} in {self.path}; `lowcarb runs` lists the runs")

    def add_footprint(self, run_id: str, fp: Footprint | dict[str, Any]) -> int:
        data = fp.to_dict() if isinstance(fp, Footprint) else dict(fp)
        with self._connect("saving a footprint", write=True) as conn:
            self._require_run(conn, run_id)
            cur = conn.execute(
                "INSERT INTO footprints (run_id, window_id, parent, name, started_at, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    data["id"],
                    data.get("parent"),
                    data["name"],
                    data.get("started_at"),
                    json.dumps(data, default=str),
                ),
            )
            return int(cur.lastrowid or 0)

    def add_stage_result(self, run_id: str, index: int, stage: str, metrics: dict[str, Any]) -> None:
        with self._connect("saving a stage result", write=True) as conn:
            self._require_run(conn, run_id)
            conn.execute(
                "INSERT OR REPLACE INTO stage_results (run_id, idx, stage, metrics) "
                "VALUES (?, ?, ?, ?)",
                (run_id, int(index), stage, _json(metrics)),
            )

    def finish_run(
        self,
        run_id: str,
        status: str,
        *,
        exit_code: int | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
        with self._connect("finishing a run", write=True) as conn:
            self._require_run(conn, run_id)
            if metrics is None:
                conn.execute(
                    "UPDATE runs SET status = ?, ended_at = ?, exit_code = ? WHERE run_id = ?",
                    (status, _now(), exit_code, run_id),
                )
            else:
                conn.execute(
                    "UPDATE runs SET status = ?, ended_at = ?, exit_code = ?, metrics = ? "
                    "WHERE run_id = ?",
                    (status, _now(), exit_code, _json(metrics), run_id),
                )

    def set_artifacts_dir(self, run_id: str, path: str | os.PathLike[str]) -> None:
        with self._connect("setting the artifacts folder", write=True) as conn:
            self._require_run(conn, run_id)
            conn.execute(
                "UPDATE runs SET artifacts_dir = ? WHERE run_id = ?", (str(path), run_id)
            )

    # -- reads ---------------------------------------------------------------------------------
    @staticmethod
    def _record(row: tuple[Any, ...]) -> RunRecord:
        return RunRecord(
            run_id=row[0],
            kind=row[1],
            name=row[2],
            status=row[3],
            started_at=row[4],
            ended_at=row[5],
            command=row[6],
            settings=json.loads(row[7] or "{}"),
            metrics=json.loads(row[8] or "{}"),
            artifacts_dir=row[9],
            exit_code=row[10],
        )

    _COLUMNS = (
        "run_id, kind, name, status, started_at, ended_at, command, settings, metrics, "
        "artifacts_dir, exit_code"
    )

    def resolve_id(self, run_id_or_prefix: str) -> str:
        key = run_id_or_prefix.strip()
        if not key:
            raise RunNotFound("empty run id; `lowcarb runs` lists the runs")
        with self._connect("looking up a run") as conn:
            rows = conn.execute(
                "SELECT run_id FROM runs WHERE run_id = ? OR run_id LIKE ? ESCAPE '\\' "
                "ORDER BY run_id",
                (key, key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"),
            ).fetchall()
        ids = [r[0] for r in rows]
        if key in ids:
            return key
        if not ids:
            raise RunNotFound(f"no run {key!r} in {self.path}; `lowcarb runs` lists the runs")
        if len(ids) > 1:
            raise RunNotFound(
                f"run id prefix {key!r} is ambiguous ({', '.join(ids[:5])}); give more characters"
            )
        return ids[0]

    def get_run(self, run_id_or_prefix: str) -> RunRecord:
        run_id = self.resolve_id(run_id_or_prefix)
        with self._connect("reading a run") as conn:
            row = conn.execute(
                f"SELECT {self._COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return self._record(row)

    def list_runs(self, limit: int = 50) -> list[RunRecord]:
        with self._connect("listing runs") as conn:
            rows = conn.execute(
                f"SELECT {self._COLUMNS} FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (int(limit),),
            ).fetchall()
        return [self._record(r) for r in rows]

    def footprints(self, run_id: str) -> list[dict[str, Any]]:
        run_id = self.resolve_id(run_id)
        with self._connect("reading footprints") as conn:
            rows = conn.execute(
                "SELECT data FROM footprints WHERE run_id = ? ORDER BY id", (run_id,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def stage_results(self, run_id: str) -> list[dict[str, Any]]:
        run_id = self.resolve_id(run_id)
        with self._connect("reading stage results") as conn:
            rows = conn.execute(
                "SELECT idx, stage, metrics FROM stage_results WHERE run_id = ? ORDER BY idx",
                (run_id,),
            ).fetchall()
        return [{"index": r[0], "stage": r[1], "metrics": json.loads(r[2])} for r in rows]

    def machine(self, run_id: str) -> dict[str, Any]:
        """The machine the run was created on (os, python, CPU, RAM)."""
        run_id = self.resolve_id(run_id)
        with self._connect("reading a run") as conn:
            row = conn.execute("SELECT machine, host FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return {**json.loads(row[0] or "{}"), "host": row[1]}

    def writer_gone(self, run_id: str) -> bool:
        """True for a run still marked running whose process on this host no longer exists
        (killed before it could finish the run: its closed windows are kept)."""
        import psutil

        run_id = self.resolve_id(run_id)
        with self._connect("reading a run") as conn:
            row = conn.execute(
                "SELECT status, host, pid FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        status, host, pid = row
        if status != "running" or host != socket.gethostname() or pid is None:
            return False
        return not psutil.pid_exists(pid)

    def run_totals(self, run_id: str) -> dict[str, float]:
        """Energy and CO2e of a run: the sum over its top-level windows (nested ones are inside)."""
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

    # -- export --------------------------------------------------------------------------------
    def export_json(self, run_ids: list[str] | None = None) -> str:
        from lowcarb.store.export import to_json

        return to_json(self, run_ids)

    def export_csv(self, run_ids: list[str] | None = None) -> str:
        from lowcarb.store.export import to_csv

        return to_csv(self, run_ids)
