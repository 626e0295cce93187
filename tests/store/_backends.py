"""The two run store backends the conformance suite runs through, each on a fresh, empty store.

PostgreSQL comes from .ci/postgres.sh (LOWCARB_TEST_POSTGRES_URL): every test gets a schema of
its own in that database (the URL's search_path), so tests never see each other's runs. Unset,
the PostgreSQL cases skip (saying how to run them); set but unreachable, they fail.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG_ENV = "LOWCARB_TEST_POSTGRES_URL"


def postgres_server_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(
            f"{PG_ENV} is not set: run the tests through `bash .ci/postgres.sh ...` (as "
            "`make test` does), which starts a PostgreSQL server"
        )
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"{PG_ENV}={url} is set but the server is unreachable: {exc}")
    return url


def with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=" + urllib.parse.quote(f"-csearch_path={schema}")


@dataclass
class Backend:
    """A fresh store location and raw access to it (to break rows on purpose)."""

    name: str
    location: str
    server_url: str = ""
    schema: str = ""

    def raw(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.name == "sqlite":
            with sqlite3.connect(self.location) as conn:
                return conn.execute(sql, params).fetchall()
        import psycopg

        with psycopg.connect(self.location, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []


def make_backend(name: str, tmp_path: Path) -> Iterator[Backend]:
    if name == "sqlite":
        yield Backend("sqlite", str(tmp_path / "runs.db"))
        return
    server = postgres_server_url()
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield Backend("postgresql", with_search_path(server, schema), server, schema)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
