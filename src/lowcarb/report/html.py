"""One self-contained HTML report per run: tables, embedded PNG figures, payback lines, the recipe."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from lowcarb.report import plots
from lowcarb.report.escape import html as escape
from lowcarb.report.lm import generation_batch_sizes, serving_sentence, training_rows, weights_notes
from lowcarb.report.sections import LEDGER_HEADERS, ledger_rows, summary_sentence
from lowcarb.report.summary import (
    ModelRow,
    Run,
    accuracy_split,
    accuracy_tolerance_pt,
    busy_warnings,
    measurement_notes,
    model_rows,
    model_sentence,
    model_table,
    paybacks,
    stage_costs,
    stage_notes,
    totals,
)

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto;
       max-width: 1320px; padding: 0 1rem; color: #222; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
.meta { color: #666; }
table { border-collapse: collapse; margin: .5rem 0; font-variant-numeric: tabular-nums;
        font-size: 13px; }
th, td { border: 1px solid #ddd; padding: .3rem .55rem; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; white-space: normal; vertical-align: bottom; min-width: 4.5em; }
td:first-child, th:first-child { text-align: left; }
#ledger-table th:last-child { text-align: left; }
#ledger-table td:last-child { text-align: left; white-space: normal; color: #555; }
.status-completed { color: #1b7e3d; } .status-failed, .status-interrupted { color: #b3261e; }
.cheaper { color: #1b7e3d; } .dearer { color: #b3261e; }
.accuracy-lost { color: #b3261e; font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: .8rem; overflow-x: auto; }
.scroll { overflow-x: auto; }
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], table_id: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return (
        f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _img(png: bytes, alt: str, img_id: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img id="{img_id}" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(run: Run) -> str:
    """The full report as one HTML string (figures embedded as data: URIs, no external files)."""
    rows = model_rows(run)
    costs = stage_costs(run)
    lm = bool(rows) and all(r.is_lm for r in rows)
    parts = _head(run, rows)
    parts += _models_section(run, rows, lm)
    train_headers, train_body = training_rows(run)
    if train_body:
        parts.append('<section id="training"><h2>Training cost per token</h2>')
        parts.append(_table(train_headers, train_body, "training-table"))
        parts.append("</section>")
    parts += _figures(rows, costs, lm)
    parts += _payback_section(run, rows)
    parts.append('<section id="ledger"><h2>Ledger: every window</h2>')
    parts.append(_table(LEDGER_HEADERS, ledger_rows(costs), "ledger-table"))
    parts.append("</section>")

    from lowcarb.report.search import search_section_html, search_summaries

    # Search summaries (a search run's search.json, a search stage's notes): plot, trials, total.
    parts += [search_section_html(search) for search in search_summaries(run)]

    notes = stage_notes(run)
    if notes:
        parts.append('<section id="notes"><h2>What each stage did</h2><dl>')
        for label, items in notes:
            text = "; ".join(f"{k}: {v}" for k, v in items)
            parts.append(f"<dt><b>{escape(label)}</b></dt><dd>{escape(text)}</dd>")
        parts.append("</dl></section>")

    recipe = run.get("recipe")
    if recipe:
        parts.append(
            '<section id="recipe"><h2>Recipe</h2><pre>'
            + escape(json.dumps(recipe, indent=2, default=str))
            + "</pre></section>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _head(run: Run, rows: Sequence[ModelRow]) -> list[str]:
    """The document head, the title line and the summary section."""
    status = str(run.get("status", "?"))
    name = str(run.get("name", "run"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>lowcarb report: {escape(name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>lowcarb report: {escape(name)}</h1>",
        f'<p class="meta">run {escape(str(run.get("id", "?")))} · status '
        f'<span class="status-{escape(status)}">{escape(status)}</span> · started '
        f"{escape(str(run.get('started_at', '?')))} · recipe {escape(str(run.get('source', '')))}</p>",
    ]
    if run.get("error"):
        parts.append(f'<p class="status-failed">error: {escape(str(run["error"]))}</p>')
    parts.append(
        f'<section id="summary"><h2>Summary</h2><p>{summary_sentence(totals(run), len(rows))}</p>'
    )
    saved = model_sentence(run)
    if saved:
        parts.append(f'<p id="final-model">{escape(saved)}</p>')
    parts.append("</section>")
    return parts


def _models_section(run: Run, rows: Sequence[ModelRow], lm: bool) -> list[str]:
    """The model table with how it was measured, its warnings and notes."""
    parts = ['<section id="models"><h2>Stages: the models and what they cost</h2>']
    if rows:
        headers, body = model_table(rows)
        if lm:
            parts.append(f"<p>{escape(serving_sentence(rows))}</p>")
        else:
            parts.append(
                f"<p>Accuracy on {accuracy_split(rows)}; latency at a fixed thread count; "
                "energy and CO2e per 1,000 inferences (served in batches of 32), measured; stage columns are the "
                "cost of producing each model.</p>"
            )
        parts.append(_table(headers, body, "model-table"))
        parts += [f'<p class="measured-on">{escape(n)}</p>' for n in measurement_notes(run)]
        parts += [
            f'<p class="status-failed busy-warning">warning: {escape(w)}</p>' for w in busy_warnings(run)
        ]
        for note in weights_notes(run):
            parts.append(f'<p class="weights-note"><b>Note:</b> {escape(note)}.</p>')
    else:
        parts.append("<p>No model was evaluated in this run.</p>")
    parts.append("</section>")
    return parts


def _figures(rows: Sequence[ModelRow], costs: list[dict[str, Any]], lm: bool) -> list[str]:
    """CO2e per stage, the accuracy trade-off and (language models) generation speed."""
    parts = ['<section id="co2-per-stage"><h2>CO2e per stage</h2>']
    if costs:
        parts.append(_img(plots.co2_per_stage_png(costs), "CO2e per stage", "co2-per-stage-plot"))
    parts.append("</section>")

    parts.append('<section id="tradeoff"><h2>Accuracy against CO2e and latency</h2>')
    if rows:
        unit = rows[-1].unit
        quality = f"{accuracy_split(rows)} {'exact match' if lm else 'accuracy'}"
        parts.append(
            _img(
                plots.tradeoff_png(rows, quality, unit=unit),
                f"{quality} against CO2e per 1,000 {unit} and latency, Pareto front marked",
                "tradeoff-plot",
            )
        )
    parts.append("</section>")

    if lm:
        parts.append('<section id="generation"><h2>Generation speed</h2>')
        parts.append(
            _img(
                plots.generation_png(rows, generation_batch_sizes(rows)),
                "decode tokens per second at each batch size, time to first token above each bar",
                "generation-plot",
            )
        )
        parts.append("</section>")
    return parts


def _payback_section(run: Run, rows: Sequence[ModelRow]) -> list[str]:
    parts = ['<section id="payback"><h2>Payback</h2>']
    lines = paybacks(rows, accuracy_tolerance_pt(run))
    if lines:
        unit = lines[-1].unit
        parts.append(
            "<p>For every stage that changed an evaluated model: the CO2e its ledger window "
            f"spent, the CO2e its model saves per million {unit} against the model before it, "
            f"and the number of {unit} after which the saving repays the cost.</p>"
        )
        parts.append('<ul id="payback-lines">')
        for p in lines:
            cls = ("cheaper" if p.cheaper else "dearer") + (" accuracy-lost" if p.accuracy_lost else "")
            parts.append(f'<li class="{cls}">{escape(p.sentence())}</li>')
        parts.append("</ul>")
    else:
        parts.append(
            "<p>No stage changed an already evaluated model, so there is nothing to pay back. "
            "A stage that makes a trained model cheaper to run (a compression stage after "
            "train, for example) gets a payback line here.</p>"
        )
    parts.append("</section>")
    return parts


def render_compare_html(a: Run, b: Run, table: tuple[list[str], list[list[str]]]) -> str:
    headers, body = table
    title = f"lowcarb compare: {a.get('id')} vs {b.get('id')}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title><style>{_CSS}</style></head><body><h1>{escape(title)}</h1>"
        + _table(headers, body, "compare-table")
        + "</body></html>"
    )
