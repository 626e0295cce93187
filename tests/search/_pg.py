"""The PostgreSQL check the distributed-search tests share (see conftest.postgres_url)."""

from __future__ import annotations

import pytest

ENV = "LOWCARB_TEST_POSTGRES_URL"


def require_postgres(url: str | None) -> str:
    """The server URL; skip when unset, fail loudly when set but unreachable."""
    if not url:
        pytest.skip(
            f"{ENV} is not set: run the tests through `make test` (or "
            f"`bash .ci/postgres.sh .venv/bin/python -m pytest ...`), which starts a server"
        )
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        pytest.fail(f"{ENV} is set but psycopg is missing ({exc}); pip install -e '.[dev]'")
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        # A CI whose server did not come up must go red, never skip the distributed tests.
        pytest.fail(f"{ENV}={url} is set but the server is unreachable: {exc}".strip())
    return url
