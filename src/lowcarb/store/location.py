"""Where the run store is: a file path (SQLite) or a `postgresql://` URL (PostgreSQL).

Precedence, highest first: `--store` on a verb (or an explicit `RunStore(location)`) >
LOWCARB_STORE > `url` in the `[store]` table of lowcarb.toml (./lowcarb.toml, then
$LOWCARB_HOME/lowcarb.toml) > $LOWCARB_HOME/runs.db (default ~/.lowcarb/runs.db).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lowcarb.measure.config import find_config_file
from lowcarb.store.records import StoreError

if TYPE_CHECKING:  # runstore imports this module at run time
    from lowcarb.store.runstore import RunStore

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: Any) -> bool:
    return isinstance(location, str) and location.strip().lower().startswith(POSTGRES_SCHEMES)


def default_store_path() -> Path:
    """$LOWCARB_HOME/runs.db, else ~/.lowcarb/runs.db."""
    home = os.environ.get("LOWCARB_HOME")
    return (Path(home) if home else Path.home() / ".lowcarb") / "runs.db"


def _configured_location() -> str | None:
    path = find_config_file()
    if path is None:
        return None
    try:
        section = tomllib.loads(path.read_text()).get("store", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}; fix or remove the file") from exc
    if not isinstance(section, dict):
        raise StoreError(f"{path}: [store] must be a table with url = \"PATH or postgresql://...\"")
    unknown = set(section) - {"url"}
    if unknown:
        raise StoreError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} in [store]; known: url")
    url = section.get("url")
    if url is not None and (not isinstance(url, str) or not url.strip()):
        raise StoreError(f"{path}: [store] url must be a file path or a postgresql:// URL")
    return url


def default_location() -> str | Path:
    """LOWCARB_STORE, else lowcarb.toml's [store] url, else $LOWCARB_HOME/runs.db."""
    env = os.environ.get("LOWCARB_STORE", "").strip()
    if env:
        return env
    return _configured_location() or default_store_path()


def backend_for(location: Any) -> type[RunStore]:
    """The RunStore subclass for a location (a path, or a postgresql:// URL)."""
    if location is None or (isinstance(location, str) and not location.strip()):
        raise StoreError("no run store given: pass a file path or a postgresql:// URL")
    if is_postgres_url(location):
        from lowcarb.store.postgres import PostgresRunStore

        return PostgresRunStore
    if isinstance(location, str) and "://" in location:
        scheme = location.split("://", 1)[0]
        raise StoreError(
            f"run store {location!r}: unknown scheme {scheme!r}; give a file path or a "
            "postgresql://user@host:port/database URL"
        )
    from lowcarb.store.sqlite import SqliteRunStore

    return SqliteRunStore
