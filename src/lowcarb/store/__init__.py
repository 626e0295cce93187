"""The run store: runs, their ledger footprints and stage results, in SQLite (WAL).

Imports only `lowcarb.measure`.
"""

from lowcarb.store.export import CODECARBON_COLUMNS, CSV_COLUMNS
from lowcarb.store.runstore import (
    RUN_STATUSES,
    RunNotFound,
    RunRecord,
    RunStore,
    StoreError,
    default_store_path,
)

__all__ = [
    "CODECARBON_COLUMNS",
    "CSV_COLUMNS",
    "RUN_STATUSES",
    "RunNotFound",
    "RunRecord",
    "RunStore",
    "StoreError",
    "default_store_path",
]
