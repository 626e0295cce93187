"""Where the store is: --store > LOWCARB_STORE > lowcarb.toml [store] url > $LOWCARB_HOME/runs.db."""

from __future__ import annotations

import pytest

from lowcarb.store import RunStore, SqliteRunStore, StoreError, default_location
from lowcarb.store.postgres import safe_url


def test_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOWCARB_HOME", str(tmp_path / "home"))
    assert default_location() == tmp_path / "home" / "runs.db"
    (tmp_path / "lowcarb.toml").write_text('[store]\nurl = "team.db"\n')
    assert default_location() == "team.db"
    monkeypatch.setenv("LOWCARB_STORE", str(tmp_path / "env.db"))
    assert default_location() == str(tmp_path / "env.db")
    store = RunStore.default()
    assert isinstance(store, SqliteRunStore) and store.path == tmp_path / "env.db"


def test_bad_settings_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lowcarb.toml").write_text('[store]\nuri = "x"\n')
    with pytest.raises(StoreError, match="unknown key.*uri.*known: url"):
        default_location()
    with pytest.raises(StoreError, match="unknown scheme 'mysql'"):
        RunStore("mysql://host/db")


def test_postgres_url_errors_hide_the_password():
    assert safe_url("postgresql://me:s3cret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert safe_url("postgresql://me@db/x") == "postgresql://me@db/x"
    with pytest.raises(StoreError) as err:
        RunStore("postgresql://me:s3cret@127.0.0.1:1/nowhere")  # nothing listens on port 1
    assert "cannot reach the run store" in str(err.value) and "s3cret" not in str(err.value)
