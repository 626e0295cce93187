"""The one stored-run path of every search (HPO, PARSEC, Weightless PARSEC, muTransfer).

    with SearchRun("parsec", "parsec:cnn", recipe, store=store, folder=out) as run:
        result = run_parsec(data, config, carbon=run.carbon, on_close=run.on_close)
        return run.finish(result.to_search_result())

A search is a stored run of kind `search`: its settings hold the method and the recipe, its
footprints are the search's top-level ledger windows (so the run's total is what the search
cost), and its artifacts folder holds `search.json` (a `lowcarb.search.result.SearchResult`),
`search.html` and `search.md` (the report's search section). The recipe's `carbon:` section is
resolved once here (`run.carbon`) and every window of the search measures with it. A search that
raises is marked failed (interrupted on Ctrl-C) with what it had finished.

AutoDistil runs as a stage of a recipe run (it changes the model); its stage writes the same
`search.json` / `search.html` / `search.md` with `save_search` and the run's report shows the same
section.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from lowcarb.files import check_writable_folder, write_text
from lowcarb.measure import CarbonConfig, Footprint
from lowcarb.measure.config import load_carbon_config
from lowcarb.pipeline.recipe import Recipe
from lowcarb.pipeline.runner import DEFAULT_OUT_DIR
from lowcarb.search.result import SearchResult
from lowcarb.store.runstore import RunStore

SEARCH_FILES = ("search.json", "search.html", "search.md")


@dataclass(frozen=True)
class StoredSearch:
    """What a search command returns: the stored run, its folder and the search's result."""

    run_id: str
    artifacts_dir: Path
    result: SearchResult


def save_search(
    result: SearchResult, folder: str | Path, *, with_json: bool = True
) -> tuple[Path, ...]:
    """Write search.json, search.html and search.md (the report's search section) into `folder`.
    with_json=False: the pages only (a stage keeps the result in its notes)."""
    from lowcarb.report.search import render_search_html, search_section_markdown

    folder = check_writable_folder(folder)
    json_path, html_path, md_path = (folder / name for name in SEARCH_FILES)
    write_text(html_path, render_search_html(result))
    write_text(md_path, search_section_markdown(result))
    if not with_json:
        return html_path, md_path
    result.save(json_path)
    return json_path, html_path, md_path


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


class SearchRun:
    """A search stored as a run of kind `search` (see the module docstring).

    folder: the artifacts folder itself; else `<out_dir>/<run id>/` (default ./lowcarb-runs).
    """

    def __init__(
        self,
        method: str,
        name: str,
        recipe: Recipe,
        *,
        settings: dict[str, Any] | None = None,
        store: RunStore | None = None,
        command: str | None = None,
        folder: str | Path | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        # Settings and folders are checked before the run exists: a typo leaves no failed run.
        self.carbon: CarbonConfig = load_carbon_config(**recipe.carbon.overrides())
        parent = Path(out_dir) if out_dir is not None else Path(DEFAULT_OUT_DIR)
        check_writable_folder(folder if folder is not None else parent, "--out")
        self.store = store if store is not None else RunStore.default()
        self.command = command
        self.method = method
        all_settings = {
            "method": method,
            "recipe": recipe.to_dict(),
            "source": recipe.source,
            "overrides": list(recipe.overrides),
            **(settings or {}),
        }
        self.run_id = self.store.create_run("search", name, command=command, settings=all_settings)
        self.artifacts_dir = Path(folder) if folder is not None else parent / self.run_id
        self.finished = False
        try:
            check_writable_folder(self.artifacts_dir, "--out")
            self.store.set_artifacts_dir(self.run_id, self.artifacts_dir.resolve())
        except BaseException as exc:  # the run exists: it must not stay `running`
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise

    def on_close(self, fp: Footprint) -> None:
        """Store a finished top-level window of the search with the run (pass as `on_close`)."""
        self.store.add_footprint(self.run_id, fp)

    def finish(self, result: SearchResult, **metrics: Any) -> StoredSearch:
        """Write the search files and mark the run completed with the result's summary."""
        save_search(result, self.artifacts_dir)
        summary = {
            "finished_at": _now(),
            "method": result.method,
            "counts": result.counts(),
            "chosen": result.chosen,
            "pareto": list(result.pareto),
            "total": result.total,
            "figures": result.figures,
            **metrics,
        }
        self.store.finish_run(self.run_id, "completed", exit_code=0, metrics=summary)
        self.finished = True
        return StoredSearch(self.run_id, self.artifacts_dir, result)

    def __enter__(self) -> SearchRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.finished:
            return
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        status = "interrupted" if interrupted else "failed"
        metrics: dict[str, Any] = {"finished_at": _now()}
        if exc is not None:
            metrics["error"] = f"{type(exc).__name__}: {exc}"
        self.store.finish_run(self.run_id, status, exit_code=130 if interrupted else 1, metrics=metrics)
