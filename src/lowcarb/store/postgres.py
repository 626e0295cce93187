"""The run store on PostgreSQL: one ledger for a team, or for the processes and machines of a job.

`PostgresRunStore("postgresql://user@host:port/database")` (or `--store URL`, LOWCARB_STORE,
lowcarb.toml's [store] url). Same tables as the SQLite store, created on first use in the
connection's schema (the search_path: `?options=-csearch_path%3Dteam_a` keeps teams apart in one
database). Every write is its own transaction, committed before the call returns, so a window is
on the server when it closes and a killed writer loses only its open windows; PostgreSQL's own
locking lets any number of writers add windows at once. Needs psycopg (the `postgres` extra).
"""

from __future__ import annotations

import os
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from lowcarb.store.records import (
    SCHEMA,
    SCHEMA_VERSION,
    StoreError,
    StoreFullError,
    StoreNotFound,
)
from lowcarb.store.runstore import RunStore

APPLICATION = "lowcarb run store"
# One advisory lock key for "creating the schema", so that processes starting together do not race.
_SCHEMA_LOCK = 0x4C4F5743
CONNECT_TIMEOUT_S = 10


def safe_url(url: str) -> str:
    """The URL without its password, for messages and listings."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class _Tx:
    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # The shared SQL uses '?' placeholders (sqlite3's); psycopg's are '%s'.
        self.cursor.execute(sql.replace("?", "%s"), tuple(params))
        return self.cursor.fetchall() if self.cursor.description is not None else []


class PostgresRunStore(RunStore):
    def __init__(self, url: str, *, create: bool = True, readonly: bool = False) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise StoreError(
                "a postgresql:// run store needs psycopg: pip install 'lowcarb[postgres]' "
                "(or psycopg[binary])"
            ) from None
        self.url = url.strip()
        self.location = safe_url(self.url)
        self.readonly = readonly
        self._lock = threading.Lock()
        self._conn: Any = None
        self._conn_pid = -1
        self.schema_version = self._init(create and not readonly)

    # -- connection ----------------------------------------------------------------------------
    def _fail(self, exc: BaseException, doing: str) -> StoreError:
        import psycopg

        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        state = getattr(exc, "sqlstate", None)
        if state == "53100":  # disk_full
            return StoreFullError(f"run store {self.location} is full ({first}) while {doing}")
        if state in ("25006",):  # read_only_sql_transaction
            return StoreError(f"run store {self.location} is read-only ({first}) while {doing}")
        if state in ("28000", "28P01"):
            return StoreError(
                f"run store {self.location}: authentication failed ({first}); check the user and "
                "password in the URL (or ~/.pgpass)"
            )
        if isinstance(exc, psycopg.OperationalError):
            return StoreError(
                f"cannot reach the run store {self.location} ({first}) while {doing}; check that "
                "the server runs and the URL, or use a file store (--store PATH)"
            )
        return StoreError(f"run store {self.location}: {first} while {doing}")

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn_pid != os.getpid() or self._conn.closed:
            # After a fork the child never touches the parent's connection: it opens its own.
            self._conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
            self._conn_pid = os.getpid()
        return self._conn

    @contextmanager
    def _transaction(self, doing: str, *, write: bool = False) -> Iterator[_Tx]:
        import psycopg

        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    if not write:
                        cur.execute("SET TRANSACTION READ ONLY")
                    yield _Tx(cur)
            except StoreError:
                raise
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError) and self._conn is not None:
                    self._conn.close()  # a lost server: reconnect at the next operation
                raise self._fail(exc, doing) from exc

    def _newest_first(self) -> str:
        return "started_at DESC, run_id DESC"

    # -- schema --------------------------------------------------------------------------------
    def _init(self, create: bool) -> int:
        with self._transaction("opening the store", write=create) as tx:
            names = {
                r[0]
                for r in tx.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema()"
                )
            }
            if "lowcarb_meta" not in names:
                if "runs" in names or "footprints" in names:
                    raise StoreError(
                        f"{self.location} has tables named like lowcarb's but is not a lowcarb "
                        "run store; lowcarb will not modify it: use another database or schema"
                    )
                if not create:
                    raise StoreNotFound(
                        f"no lowcarb run store in {self.location} (nothing was created): check the "
                        "URL; a store is created by the first command that saves a run there"
                    )
                return self._create(tx)
            meta = dict(tx.execute("SELECT key, value FROM lowcarb_meta"))
        if meta.get("application") != APPLICATION:
            raise StoreError(f"{self.location}: lowcarb_meta is not a lowcarb run store's")
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"run store {self.location} was written by a newer lowcarb (schema {version}); "
                "upgrade lowcarb or use another store"
            )
        return version

    def _create(self, tx: _Tx) -> int:
        tx.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
        tx.execute("CREATE TABLE IF NOT EXISTS lowcarb_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        for statement in SCHEMA.format(serial="BIGSERIAL PRIMARY KEY").split(";"):
            if statement.strip():
                tx.execute(statement)
        tx.execute(
            "INSERT INTO lowcarb_meta (key, value) VALUES ('application', ?), ('schema_version', ?) "
            "ON CONFLICT (key) DO NOTHING",
            (APPLICATION, str(SCHEMA_VERSION)),
        )
        return SCHEMA_VERSION
