"""Reports: what a stored run shows, as one self-contained HTML file or markdown.

`report` reads stored results (plain dicts, as the runner writes them to metrics.json and the run
store); it trains nothing.
"""

from lowcarb.report.compare import compare_rows
from lowcarb.report.html import render_compare_html, render_html
from lowcarb.report.markdown import md_table, render_markdown
from lowcarb.report.summary import ModelRow, Payback, model_rows, pareto_front, paybacks

__all__ = [
    "ModelRow",
    "Payback",
    "compare_rows",
    "md_table",
    "model_rows",
    "pareto_front",
    "paybacks",
    "render_compare_html",
    "render_html",
    "render_markdown",
]
