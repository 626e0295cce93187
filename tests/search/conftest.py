"""The PostgreSQL server for the distributed-search tests (started by .ci/postgres.sh)."""

from __future__ import annotations

import os
import uuid

import pytest
from _pg import ENV, require_postgres


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return require_postgres(os.environ.get(ENV))


@pytest.fixture
def study_name() -> str:
    # Tests share one database: each gets its own study.
    return f"test-{uuid.uuid4().hex[:10]}"
