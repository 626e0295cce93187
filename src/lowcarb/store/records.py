"""What every run store backend shares: the schema, the records, the errors, machine facts.

One schema for SQLite and PostgreSQL. Runs have an id, a kind, a name, a status and JSON settings
and metrics; footprints (one row per closed ledger window, the window as JSON) and stage results
belong to a run. A run can be a job's: windows from several processes or machines with one job id
(LOWCARB_JOB, or torchrun's TORCHELASTIC_RUN_ID) join one run, and each process is listed in
run_processes so that the run is finished when its last process finishes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lowcarb.errors import LowcarbError, LowcarbWarning

SCHEMA_VERSION = 2
RUN_STATUSES = ("running", "completed", "failed", "interrupted")
# When the processes of a job end differently, the run takes the worst status.
STATUS_RANK = {"completed": 0, "interrupted": 1, "failed": 2}

# `{serial}` is the dialect's auto-incrementing primary key; everything else is the same SQL.
SCHEMA = """
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
    machine TEXT,
    job_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_job ON runs(job_id);
CREATE TABLE IF NOT EXISTS footprints (
    id {serial},
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
CREATE TABLE IF NOT EXISTS run_processes (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    PRIMARY KEY (run_id, host, pid)
);
"""
# Schema 1 (lowcarb 0.1) had no jobs: what turns such a store into schema 2.
MIGRATE_1_TO_2 = """
ALTER TABLE runs ADD COLUMN job_id TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS runs_job ON runs(job_id);
"""


class StoreError(LowcarbError, ValueError):
    """The run store cannot be used; the message names the store and the fix."""


class RunNotFound(StoreError):
    """No run (or more than one) matches the id or prefix given."""


class StoreNotFound(StoreError):
    """A store opened for reading does not exist (nothing is created for a read)."""


class StoreFullError(StoreError):
    """The store's disk (or database) is full; what could not be saved is named."""


class StoreWarning(LowcarbWarning):
    """Something in the store was skipped (a broken row) or is kept for later (a full store)."""


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
    job_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def loads_or_warn(text: str | None, what: str, location: str) -> Any:
    """JSON from a row, or None with a warning naming the store and the row when it is broken."""
    try:
        return json.loads(text or "{}")
    except (TypeError, ValueError) as exc:
        warnings.warn(
            StoreWarning(f"run store {location}: {what} is not valid JSON ({exc}); skipped"),
            stacklevel=4,
        )
        return None


def record_from_row(row: Sequence[Any], location: str) -> RunRecord:
    """A RunRecord from a `runs` row (broken settings or metrics read as empty, with a warning)."""
    where = f"run {row[0]!r}"
    settings = loads_or_warn(row[7], f"the settings of {where}", location)
    metrics = loads_or_warn(row[8], f"the metrics of {where}", location)
    return RunRecord(
        run_id=row[0],
        kind=row[1],
        name=row[2],
        status=row[3],
        started_at=row[4],
        ended_at=row[5],
        command=row[6],
        settings=settings if isinstance(settings, dict) else {},
        metrics=metrics if isinstance(metrics, dict) else {},
        artifacts_dir=row[9],
        exit_code=row[10],
        job_id=row[11] if len(row) > 11 else None,
    )


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def to_json(value: Any) -> str:
    return json.dumps(value if value is not None else {}, default=str, sort_keys=True)


def job_id_from_env() -> str | None:
    """The job this process belongs to: LOWCARB_JOB, else torchrun's TORCHELASTIC_RUN_ID.

    torchrun's default rendezvous id is "none" for every job: that is no job id.
    """
    for var in ("LOWCARB_JOB", "TORCHELASTIC_RUN_ID"):
        value = os.environ.get(var, "").strip()
        if value and value.lower() != "none":
            return value
    return None


def cpu_model() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # no /proc/cpuinfo (not Linux): the platform's name stands for the model
    return model


def machine_info() -> dict[str, Any]:
    """What the export's machine columns need, captured when the run (or a job process) starts."""
    import psutil

    total = psutil.virtual_memory().total
    return {
        "os": platform.platform(),
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "ram_total_size_gb": round(total / 1e9, 3),
        "ram_total_bytes": total,
    }
