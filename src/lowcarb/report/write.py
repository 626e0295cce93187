"""Write a stored run's report, or two runs' comparison, as files: what `lowcarb report` and
`lowcarb compare` call (the CLI parses and prints; the work is here).

Paths are checked before anything is read or rendered, and every file is written whole
(lowcarb.files: a temporary name renamed), so a bad path or a full disk is one PathError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lowcarb import files
from lowcarb.errors import PathError
from lowcarb.report.compare import compare_rows
from lowcarb.report.escape import markdown
from lowcarb.report.html import render_compare_html, render_html
from lowcarb.report.markdown import md_table, render_markdown
from lowcarb.report.stored import load_run
from lowcarb.store.runstore import RunStore

ReportFormat = Literal["html", "md"]


@dataclass(frozen=True)
class WrittenReport:
    path: Path
    text: str  # what was written (the CLI prints the markdown one)


@dataclass(frozen=True)
class WrittenComparison:
    run_a: dict[str, Any]
    run_b: dict[str, Any]
    headers: list[str]
    rows: list[list[str]]
    html_path: Path
    md_path: Path


def check_report_file(path: str | Path, fmt: ReportFormat = "html") -> Path:
    """Before any work: `path` is a file name in a folder that can be written."""
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{path} is a folder; give a file name for the report (report.{fmt})")
    files.check_writable_folder(path.parent if str(path.parent) else Path("."), "report folder")
    return path


def write_run_report(
    store: RunStore, run_id: str, fmt: ReportFormat = "html", out: str | Path | None = None
) -> WrittenReport:
    """Render stored run `run_id` as HTML or markdown into `out` (default: report.FMT in the
    run's folder, or in the working directory when the run has none)."""
    path = check_report_file(out, fmt) if out else None
    run = load_run(store, run_id)
    if path is None:
        folder = files.check_writable_folder(
            Path(run["artifacts_dir"] or Path.cwd()), "the run's folder (give an output file instead)"
        )
        path = folder / f"report.{fmt}"
    text = render_html(run) if fmt == "html" else render_markdown(run)
    files.write_text(path, text)
    return WrittenReport(path=path, text=text)


def write_comparison(
    store: RunStore, run_a: str, run_b: str, folder: str | Path = "lowcarb-runs"
) -> WrittenComparison:
    """Compare two stored recipe runs; write compare-A-B.html and .md into `folder`."""
    # Checked before any work: a folder that cannot hold the comparison is one line.
    out = files.check_writable_folder(Path(folder), "comparison folder")
    a, b = load_run(store, run_a), load_run(store, run_b)
    headers, body = compare_rows(a, b)
    stem = out / f"compare-{a['id']}-{b['id']}"
    html_path, md_path = stem.with_suffix(".html"), stem.with_suffix(".md")
    files.write_text(html_path, render_compare_html(a, b, (headers, body)))
    files.write_text(
        md_path,
        f"# lowcarb compare: {markdown(a['id'])} vs {markdown(b['id'])}\n\n"
        + md_table(headers, body)
        + "\n",
    )
    return WrittenComparison(a, b, list(headers), [list(r) for r in body], html_path, md_path)
