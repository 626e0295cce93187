"""The run store in one SQLite file (stdlib sqlite3, WAL): the default, nothing to install.

Each write is its own committed transaction (synchronous=FULL), so a window closed before a crash
is on disk. WAL lets readers and several writer processes work at once; writers wait for each other
(busy timeout) instead of failing. The file carries an application id ("LOWC"), so a foreign
SQLite file is refused, never modified.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lowcarb.store.records import (
    MIGRATE_1_TO_2,
    SCHEMA,
    SCHEMA_VERSION,
    StoreError,
    StoreFullError,
    StoreNotFound,
)
from lowcarb.store.runstore import RunStore

# "LOWC" as a big-endian int: marks a file as a lowcarb store (PRAGMA application_id).
APPLICATION_ID = 0x4C4F5743
BUSY_TIMEOUT_S = 60.0
# How long a reader waits for a store that exists as a file but has no tables yet (another
# process is creating it) before it reads it as an empty store.
BEING_CREATED_WAIT_S = 1.0


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, tuple(params)).fetchall()


class SqliteRunStore(RunStore):
    """`SqliteRunStore(path, create=True, readonly=False)`; `create=False` opens an existing
    store only (a read creates nothing), `readonly=True` never writes (read-only files work)."""

    def __init__(
        self, path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False
    ) -> None:
        self.file = Path(path).expanduser()
        self.location = str(self.file)
        self.readonly = readonly
        self._uri_mode = "ro" if readonly else "rwc" if create else "rw"
        self._empty = False  # a read-only store without tables: read as an empty in-memory one
        self._check_place(create and not readonly)
        with self._connect("opening the store") as conn:
            self.schema_version = self._init(conn)

    @property
    def path(self) -> Path:
        return self.file

    # -- connection ----------------------------------------------------------------------------
    def _check_place(self, create: bool) -> None:
        if self.file.is_dir():
            raise StoreError(f"run store {self.file} is a folder; give a file path (runs.db)")
        if not create:
            if not self.file.exists():
                raise StoreNotFound(
                    f"no run store at {self.file} (nothing was created): check the path; a store "
                    "is created by the first command that saves a run there"
                )
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the run store folder {self.file.parent} ({exc}); "
                "set LOWCARB_HOME or --store to a writable place"
            ) from exc

    def _fail(self, exc: BaseException, doing: str) -> StoreError:
        msg = str(exc)
        if "database or disk is full" in msg:
            return StoreFullError(f"run store {self.file} is full ({msg}) while {doing}")
        if isinstance(exc, sqlite3.DatabaseError) and (
            "not a database" in msg or "malformed" in msg or "corrupt" in msg
        ):
            return StoreError(
                f"run store {self.file} is corrupted or not an SQLite file ({msg}); lowcarb will "
                "not overwrite it: move it aside, or use another store (--store PATH or LOWCARB_HOME)"
            )
        if isinstance(exc, (PermissionError, sqlite3.OperationalError)) and (
            "readonly" in msg or "unable to open" in msg or "ermission" in msg or "read-only" in msg
        ):
            return StoreError(
                f"run store {self.file} is not writable ({msg}) while {doing}; fix the permissions "
                "or use another store (--store PATH or LOWCARB_HOME)"
            )
        return StoreError(f"run store {self.file}: {msg} while {doing}")

    def _open(self) -> sqlite3.Connection:
        if self._empty:
            conn = sqlite3.connect(":memory:", isolation_level=None)
            conn.executescript(SCHEMA.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT"))
            return conn
        # Quoted: a path may hold '?', '#' or '%', which a URI would read as its own syntax.
        uri = f"file:{urllib.parse.quote(str(self.file))}?mode={self._uri_mode}"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        if self._uri_mode != "ro":
            return conn
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
        # A WAL store in a folder we cannot write: its shared-memory file cannot be made, so read
        # it as immutable media (right for a store nobody writes while we read it).
        self._uri_mode = "ro&immutable=1"
        uri = f"file:{urllib.parse.quote(str(self.file))}?mode=ro&immutable=1"
        return sqlite3.connect(uri, uri=True, isolation_level=None)

    @contextmanager
    def _connect(self, doing: str, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        # A connection per operation: safe across threads and forks, and cheap next to a window.
        try:
            conn = self._open()
        except (sqlite3.Error, OSError) as exc:
            raise self._fail(exc, doing) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not self.readonly:
                conn.execute("PRAGMA foreign_keys = ON")
                # FULL: each committed window is fsynced; windows close rarely: this costs little.
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

    @contextmanager
    def _transaction(self, doing: str, *, write: bool = False) -> Iterator[_Tx]:
        with self._connect(doing, write=write) as conn:
            yield _Tx(conn)

    def _newest_first(self) -> str:
        return "started_at DESC, rowid DESC"

    # -- schema --------------------------------------------------------------------------------
    def _init(self, conn: sqlite3.Connection) -> int:
        # Another process may be creating this store at this very moment: SQLite answers some
        # steps of that ("database is locked" on the switch to WAL) at once instead of waiting on
        # the busy timeout, so those are retried here until the same deadline.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return self._init_once(conn)
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.01, 0.05))

    def _header(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """(application id, table count, schema version) read in one transaction: read one by
        one, a store another process creates in between looks half-made (tables, no id)."""
        conn.execute("BEGIN")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("COMMIT")
        return int(app_id), int(tables), int(version)

    def _wait_for_creator(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """A file without tables is most likely a store another process is creating right now
        (its file exists a moment before its schema): give that process a moment to finish."""
        deadline = time.monotonic() + BEING_CREATED_WAIT_S
        header = self._header(conn)
        while not header[1] and time.monotonic() < deadline:
            time.sleep(0.05)
            header = self._header(conn)
        return header

    def _check_header(self, app_id: int, tables: int, version: int) -> None:
        if tables and app_id != APPLICATION_ID:
            raise StoreError(
                f"{self.file} is an SQLite database but not a lowcarb run store; lowcarb will "
                "not modify it: use another path (--store PATH or LOWCARB_HOME)"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"run store {self.file} was written by a newer lowcarb (schema {version}); "
                "upgrade lowcarb or use another store"
            )

    def _init_once(self, conn: sqlite3.Connection) -> int:
        app_id, tables, version = self._header(conn)
        if self.readonly and not tables:
            app_id, tables, version = self._wait_for_creator(conn)
        self._check_header(app_id, tables, version)
        if not self.readonly and (not tables or version < SCHEMA_VERSION):
            version = self._create_or_migrate(conn)
        elif not tables:
            # An empty file opened read-only: no runs. Reads go to an empty in-memory store of
            # the same schema, so every read answers "nothing" instead of "no such table".
            self._empty = True
            version = SCHEMA_VERSION
        # A quick structural check catches a damaged file before we write into it.
        ok = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if ok != "ok":
            raise StoreError(
                f"run store {self.file} is corrupted ({ok}); lowcarb will not overwrite it: "
                "move it aside or use another store (--store PATH or LOWCARB_HOME)"
            )
        return int(version)

    def _create_or_migrate(self, conn: sqlite3.Connection) -> int:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"run store {self.file}: cannot enable WAL (got {mode})")
        # One IMMEDIATE transaction: two processes creating (or migrating) the same store take
        # turns, and the second reads again what the first made before it changes anything.
        conn.execute("BEGIN IMMEDIATE")
        try:
            app_id, tables, current = (
                conn.execute("PRAGMA application_id").fetchone()[0],
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0],
                conn.execute("PRAGMA user_version").fetchone()[0],
            )
            self._check_header(app_id, tables, current)
            if current == 1:
                for statement in MIGRATE_1_TO_2.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            if current < SCHEMA_VERSION:
                schema = SCHEMA.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT")
                for statement in schema.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return SCHEMA_VERSION


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc)
    return "database is locked" in msg or "database is busy" in msg
