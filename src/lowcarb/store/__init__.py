"""The run store: runs, their ledger footprints and stage results, in SQLite (default, WAL) or
PostgreSQL (a team's or a multi-machine job's ledger), behind one interface.

Imports only `lowcarb.measure` (and `lowcarb.errors`).
"""

from lowcarb.store.export import CODECARBON_COLUMNS, CSV_COLUMNS, LOWCARB_COLUMNS
from lowcarb.store.location import default_location, default_store_path
from lowcarb.store.records import (
    RUN_STATUSES,
    RunNotFound,
    RunRecord,
    StoreError,
    StoreFullError,
    StoreNotFound,
    StoreWarning,
    job_id_from_env,
)
from lowcarb.store.runstore import RunStore
from lowcarb.store.sqlite import SqliteRunStore

__all__ = [
    "CODECARBON_COLUMNS",
    "CSV_COLUMNS",
    "LOWCARB_COLUMNS",
    "RUN_STATUSES",
    "RunNotFound",
    "RunRecord",
    "RunStore",
    "SqliteRunStore",
    "StoreError",
    "StoreFullError",
    "StoreNotFound",
    "StoreWarning",
    "default_location",
    "default_store_path",
    "job_id_from_env",
]
