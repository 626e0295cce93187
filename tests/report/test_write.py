"""`lowcarb.report.write`: a stored run's report and two runs' comparison as files, the library
calls behind `lowcarb report` and `lowcarb compare`."""

from __future__ import annotations

import pytest

from lowcarb.errors import PathError
from lowcarb.report.write import check_report_file, write_comparison, write_run_report
from lowcarb.store import RunStore
from lowcarb.store.records import RunNotFound


def _store_run(store: RunStore, run: dict, artifacts_dir=None) -> str:
    """Store `run` (the report fixture's shape) as the runner stores a recipe run."""
    settings = {"source": run["source"], "overrides": [], "recipe": run["recipe"]}
    run_id = store.create_run("recipe", run["name"], settings=settings, artifacts_dir=artifacts_dir)
    for index, stage in enumerate(run["stages"]):
        store.add_stage_result(run_id, index, stage["name"], stage)
    store.finish_run(run_id, "completed", metrics={"error": None})
    return run_id


@pytest.fixture
def stored(tmp_path, two_model_run):
    store = RunStore(tmp_path / "runs.db")
    folder = tmp_path / "run-a"
    folder.mkdir()
    a = _store_run(store, two_model_run, artifacts_dir=folder)
    b = _store_run(store, {**two_model_run, "name": "other"})
    return store, a, b, folder


def test_report_goes_to_the_runs_folder_or_the_given_file(stored, tmp_path):
    store, a, _, folder = stored
    written = write_run_report(store, a)
    assert written.path == folder / "report.html"
    assert written.path.read_text() == written.text and written.text.rstrip().endswith("</html>")
    md = write_run_report(store, a[:5], "md", tmp_path / "sub" / "r.md")
    assert md.path.read_text().startswith("# lowcarb report: demo")


def test_report_paths_are_checked_before_the_run_is_read(stored, tmp_path):
    store, _, _, _ = stored
    with pytest.raises(PathError, match="is a folder; give a file name"):
        write_run_report(store, "no-such-run", "md", tmp_path)  # the path fails first
    with pytest.raises(PathError, match="is a file, not a folder"):
        check_report_file(tmp_path / "runs.db" / "r.html")
    with pytest.raises(RunNotFound, match="no run"):
        write_run_report(store, "zzzzzzzz", "md", tmp_path / "r.md")
    assert not (tmp_path / "r.md").exists()


def test_comparison_writes_both_files_and_returns_the_rows(stored, tmp_path):
    store, a, b, _ = stored
    done = write_comparison(store, a, b, tmp_path / "cmp")
    assert (done.run_a["id"], done.run_b["id"]) == (a, b)
    assert done.headers[1:] == [f"A: demo ({a})", f"B: other ({b})", "B vs A"]
    assert any(row[0] == "params" for row in done.rows)
    assert done.html_path.name == f"compare-{a}-{b}.html" and done.html_path.exists()
    assert "| params |" in done.md_path.read_text()
    with pytest.raises(PathError, match="is a file, not a folder"):
        write_comparison(store, a, b, done.md_path)
