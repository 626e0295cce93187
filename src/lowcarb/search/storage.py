"""Where a search keeps its study: an SQLite file in the run folder, or a shared RDB server.

Optuna's RDBStorage does the work (several processes or machines join one study through it); this
module only picks the URL, sets the heartbeat that turns a killed worker's trial into a failed one
(retried under a new number by RetryFailedTrialCallback), and turns connection problems into one
line that says what to fix.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy import event
from sqlalchemy.engine import make_url

from lowcarb.errors import ConfigError

DEFAULT_DB_NAME = "search.db"

# A server that does not answer within this many seconds is reported as unreachable.
CONNECT_TIMEOUT_S = 10


def default_storage_url(run_dir: str | Path) -> str:
    """The embedded default: `<run_dir>/search.db`, nothing to start."""
    path = Path(run_dir).resolve() / DEFAULT_DB_NAME
    return f"sqlite:///{path}"


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and stored results."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password we could find
        return url


def open_storage(
    url: str | None,
    run_dir: str | Path,
    *,
    heartbeat_s: int = 5,
    grace_s: int = 20,
    max_retry: int = 2,
) -> RDBStorage:
    """Open (and create the tables of) the study storage; None is the run folder's SQLite file.

    Raises ConfigError with one line naming the URL (password hidden) and what to do.
    """
    if url is None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        url = default_storage_url(run_dir)
    url, backend, engine_kwargs = _engine_settings(url)
    return _create_storage(url, backend, engine_kwargs, heartbeat_s, grace_s, max_retry)


def _engine_settings(url: str) -> tuple[str, str, dict[str, Any]]:
    """The URL with its driver named, the backend, and SQLAlchemy engine settings."""
    shown = redact(url)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(
            f"storage {url!r} is not a database URL; give sqlite:///path/search.db or "
            f"postgresql://user:password@host:5432/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        raise ConfigError(f"storage {shown}: write postgresql://, not postgres://")
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend == "postgresql" and parsed.drivername == "postgresql":
        # A bare postgresql:// means whichever driver is installed (SQLAlchemy's default differs
        # between versions): psycopg 3 (the `postgres` extra), else psycopg2.
        url = parsed.set(drivername=f"postgresql+{_postgres_driver()}").render_as_string(
            hide_password=False
        )
    if backend == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    elif backend == "sqlite":
        # Several local processes may share the file: wait for the lock instead of failing.
        engine_kwargs["connect_args"] = {"timeout": 60}
        if parsed.database:
            folder = Path(parsed.database).parent
            if not folder.is_dir():
                raise ConfigError(
                    f"storage {shown}: folder {folder} does not exist; create it or give another path"
                )
    return url, backend, engine_kwargs


def _create_storage(
    url: str,
    backend: str,
    engine_kwargs: dict[str, Any],
    heartbeat_s: int,
    grace_s: int,
    max_retry: int,
) -> RDBStorage:
    shown = redact(url)
    drivername = make_url(url).drivername
    last_exc: Exception | None = None
    # Workers started together may race to create the tables on a fresh PostgreSQL database;
    # the loser sees a duplicate-object error and simply retries once the winner is done.
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                # Heartbeats and their retry callback are marked experimental by Optuna.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_s,
                    grace_period=grace_s,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                        max_retry=max_retry
                    ),
                )
            if backend == "sqlite":
                _fast_sqlite(storage)
            return storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            last_exc = exc
            time.sleep(0.5 * (attempt + 1))
        except sqlalchemy.exc.NoSuchModuleError:
            raise ConfigError(
                f"storage {shown}: unknown database kind {drivername!r}; "
                f"use sqlite:///path or postgresql://host/db"
            ) from None
        except ImportError:
            raise ConfigError(
                f"storage {shown}: the database driver for {drivername} is not "
                f"installed; install it with: pip install 'lowcarb[postgres]'"
            ) from None
        except sqlalchemy.exc.OperationalError as exc:
            raise ConfigError(
                f"cannot reach the search storage {shown}: {_first_line(exc)}; "
                f"check that the server is running and the URL (host, port, user, database)"
            ) from None
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            raise ConfigError(
                f"cannot open the search storage {shown}: {_first_line(exc)}"
            ) from None
    raise ConfigError(f"cannot create the search tables in {shown}: {_first_line(last_exc)}")


def _postgres_driver() -> str:
    for module in ("psycopg", "psycopg2"):
        try:
            __import__(module)
        except ImportError:
            continue
        return module
    raise ConfigError(
        "no PostgreSQL driver is installed; install one with: pip install 'lowcarb[postgres]'"
    )


def _fast_sqlite(storage: RDBStorage) -> None:
    """WAL and synchronous=NORMAL: a commit per trial attribute no longer waits for an fsync.

    Optuna commits every attribute it stores; with SQLite's default rollback journal each commit
    costs a disk flush (about 10 ms here). WAL with NORMAL sync keeps the file consistent after a
    crashed or killed process, which is what a search database needs.
    """

    def pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened before the listener reconnect with it


def _first_line(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0].strip() if text else type(orig).__name__
