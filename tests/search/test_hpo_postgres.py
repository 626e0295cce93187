"""Distributed search on a real PostgreSQL server: several workers, kill -9, bad URLs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from _pg import require_postgres
from _toy import toy_config, toy_trial
from optuna.trial import TrialState

from lowcarb.search.hpo import FOOTPRINT_ATTR, WORKER_ATTR, run_search
from lowcarb.search.storage import open_storage

WORKER = Path(__file__).with_name("_toy_worker.py")


def _worker(url, study, run_dir, *, n_trials, sleep_s, marker_dir=None, barrier=None):
    cmd = [
        sys.executable,
        str(WORKER),
        "--storage",
        url,
        "--study",
        study,
        "--run-dir",
        str(run_dir),
        "--n-trials",
        str(n_trials),
        "--sleep-s",
        str(sleep_s),
    ]
    if marker_dir:
        cmd += ["--marker-dir", str(marker_dir)]
    if barrier:
        cmd += ["--barrier", str(barrier)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def _wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _finish(proc, timeout_s=120):
    out, _ = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, out
    return out


def _trials(url, study):
    return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)


def test_two_workers_finish_the_study_with_exactly_n_trials(postgres_url, study_name, tmp_path):
    barrier = tmp_path / "go"
    workers = [
        _worker(
            postgres_url, study_name, tmp_path / f"w{i}", n_trials=8, sleep_s=0.6, barrier=barrier
        )
        for i in range(2)
    ]
    _wait_for(lambda: len(list(tmp_path.glob("go.ready-*"))) == 2, 60, "both workers to start")
    barrier.touch()
    for w in workers:
        _finish(w)
    trials = _trials(postgres_url, study_name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    # Both processes did share of the work, each trial with its own footprint.
    assert len({t.user_attrs[WORKER_ATTR] for t in complete}) == 2
    assert all(t.user_attrs[FOOTPRINT_ATTR]["energy_j"] > 0 for t in complete)


def test_killed_worker_trial_is_failed_and_retried(postgres_url, study_name, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    barrier = tmp_path / "go"
    victim = _worker(
        postgres_url,
        study_name,
        tmp_path / "a",
        n_trials=6,
        sleep_s=8.0,
        marker_dir=markers,
        barrier=barrier,
    )
    survivor = _worker(
        postgres_url, study_name, tmp_path / "b", n_trials=6, sleep_s=0.4, barrier=barrier
    )
    _wait_for(lambda: len(list(tmp_path.glob("go.ready-*"))) == 2, 60, "both workers to start")
    barrier.touch()
    # The victim's trials take 8 s: kill it mid-trial, no chance to clean up.
    _wait_for(lambda: any(markers.glob(f"started-*-{victim.pid}")), 60, "the victim's trial")
    (started,) = markers.glob(f"started-*-{victim.pid}")
    killed_number = int(started.name.split("-")[1])
    time.sleep(0.5)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    _finish(survivor)  # the survivor alone completes the study, retry included
    trials = {t.number: t for t in _trials(postgres_url, study_name)}
    killed = trials[killed_number]
    assert killed.state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1
    (retry,) = retries
    assert retry.state == TrialState.COMPLETE
    assert retry.params == killed.params  # the same candidate, under a new number
    assert retry.number != killed_number
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    assert not [t for t in trials.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_in_process_search_on_postgres_reports_the_storage(postgres_url, study_name, tmp_path):
    result = run_search(
        toy_trial(),
        toy_config(n_trials=3),
        run_dir=tmp_path,
        storage=postgres_url,
        study_name=study_name,
    )
    assert result.counts() == {"complete": 3}
    assert result.storage.startswith("postgresql://")
    assert not (tmp_path / "search.db").exists()  # the server holds the study, not the run folder


def test_unreachable_server_is_one_clear_line(tmp_path):
    with pytest.raises(ValueError) as err:
        open_storage("postgresql://lowcarb:secret@127.0.0.1:1/nowhere", tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "cannot reach the search storage" in message
    assert "127.0.0.1:1" in message and "secret" not in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", "not a database URL"),
        ("postgres://u@127.0.0.1/db", "write postgresql://"),
        ("mongodb://127.0.0.1/db", "unknown database kind"),
        ("sqlite:////no/such/folder/search.db", "does not exist"),
    ],
)
def test_bad_storage_urls_are_one_clear_line(tmp_path, url, expected):
    with pytest.raises(ValueError, match=expected) as err:
        open_storage(url, tmp_path)
    assert "\n" not in str(err.value)


def test_wrong_database_on_a_live_server_is_a_clear_error(postgres_url, tmp_path):
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(ValueError, match="no_such_database.*does not exist"):
        open_storage(url, tmp_path)


def test_set_but_unreachable_server_fails_loudly_and_unset_skips():
    # A CI whose server did not come up must go red, not skip the distributed tests.
    with pytest.raises(pytest.fail.Exception, match="is set but the server is unreachable"):
        require_postgres("postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(pytest.skip.Exception, match="is not set"):
        require_postgres(None)
