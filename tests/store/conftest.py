"""Fixtures of the store tests: `backend` runs a test once per run store backend."""

from __future__ import annotations

import pytest

from ._backends import make_backend


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    yield from make_backend(request.param, tmp_path)
