"""The report as markdown: the same tables and payback lines as the HTML form, no figures.

Every value that comes from the run (names, paths, labels, errors, notes) goes through
`escape.markdown`, so a name holding HTML, links or emphasis shows as the text it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from lowcarb.report import escape
from lowcarb.report.lm import serving_sentence, training_rows, weights_notes
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
    pareto_front,
    paybacks,
    stage_costs,
    stage_notes,
    totals,
)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: object) -> str:
        return escape.markdown(text)

    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(run: Run) -> str:
    rows = model_rows(run)
    out = [
        f"# lowcarb report: {escape.markdown(run.get('name', 'run'))}",
        "",
        f"run {escape.markdown(run.get('id', '?'))} · status "
        f"**{escape.markdown(run.get('status', '?'))}** · started "
        f"{escape.markdown(run.get('started_at', '?'))} · recipe {escape.markdown(run.get('source', ''))}",
        "",
    ]
    if run.get("error"):
        out += [f"**error:** {escape.markdown(run['error'])}", ""]
    out += [
        "## Summary",
        "",
        summary_sentence(totals(run), len(rows)),
        "",
        *([escape.markdown(model_sentence(run) or ""), ""] if run.get("model") else []),
        "## Stages: the models and what they cost",
        "",
    ]
    out += _models_section(run, rows) if rows else ["No model was evaluated in this run.", ""]
    out += ["## Payback", ""]
    lines = paybacks(rows, accuracy_tolerance_pt(run))
    out += [f"- {escape.markdown(p.sentence())}" for p in lines] or [
        "No stage changed an already evaluated model, so there is nothing to pay back."
    ]
    out += ["", "## Ledger: every window", "", md_table(LEDGER_HEADERS, ledger_rows(stage_costs(run))), ""]
    from lowcarb.report.search import search_section_markdown, search_summaries

    # Search summaries (a search run's search.json, a search stage's notes): trials and total.
    out += [search_section_markdown(search) for search in search_summaries(run)]
    notes = stage_notes(run)
    if notes:
        out += ["## What each stage did", ""]
        out += [
            f"- **{escape.markdown(label)}**: "
            + "; ".join(f"{escape.markdown(k)}: {escape.markdown(v)}" for k, v in items)
            for label, items in notes
        ]
        out.append("")
    return "\n".join(out)


def _models_section(run: Run, rows: Sequence[ModelRow]) -> list[str]:
    """The model table, its notes and warnings, the Pareto front and the training cost table."""
    headers, body = model_table(rows)
    out = [serving_sentence(rows), ""] if all(r.is_lm for r in rows) else []
    out += [md_table(headers, body), ""]
    out += [line for n in measurement_notes(run) for line in (escape.markdown(n), "")]
    out += [line for w in busy_warnings(run) for line in (f"**warning:** {escape.markdown(w)}", "")]
    out += [f"**Note:** {escape.markdown(note)}." for note in weights_notes(run)]
    out += [""] if weights_notes(run) else []
    points = [
        (r.per1k_total_g, r.accuracy)
        for r in rows
        if r.per1k_total_g is not None and r.accuracy is not None
    ]
    named = [r.label for r in rows if r.per1k_total_g is not None and r.accuracy is not None]
    front = [named[i] for i in pareto_front(points)]
    out += [
        f"Pareto front ({accuracy_split(rows)} accuracy against CO2e per 1,000 {rows[-1].unit}): "
        + (", ".join(escape.markdown(f) for f in front) or "-"),
        "",
    ]
    train_headers, train_body = training_rows(run)
    if train_body:
        out += ["## Training cost per token", "", md_table(train_headers, train_body), ""]
    return out
