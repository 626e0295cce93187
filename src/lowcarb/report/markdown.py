"""The report as markdown: the same tables and payback lines as the HTML form, no figures.

Every value that comes from the run (names, paths, labels, errors, notes) goes through
`escape.markdown`, so a name holding HTML, links or emphasis shows as the text it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from lowcarb.report import escape
from lowcarb.report.lm import serving_sentence, training_rows, weights_notes
from lowcarb.report.summary import (
    Run,
    accuracy_split,
    accuracy_tolerance_pt,
    busy_warnings,
    fmt_g,
    fmt_j,
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
    costs = stage_costs(run)
    total = totals(run)
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
        f"The run used {fmt_j(total['energy_j'])} and emitted {fmt_g(total['operational_g'])} "
        f"operational + {fmt_g(total['embodied_g'])} embodied CO2e over "
        f"{total['duration_s']:.1f} s. {len(rows)} model(s) evaluated.",
        "",
        *([escape.markdown(model_sentence(run) or ""), ""] if run.get("model") else []),
        "## Stages: the models and what they cost",
        "",
    ]
    if rows:
        headers, body = model_table(rows)
        if all(r.is_lm for r in rows):
            out += [serving_sentence(rows), ""]
        out += [md_table(headers, body), ""]
        out += [line for n in measurement_notes(run) for line in (escape.markdown(n), "")]
        out += [
            line for w in busy_warnings(run) for line in (f"**warning:** {escape.markdown(w)}", "")
        ]
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
    else:
        out += ["No model was evaluated in this run.", ""]
    out += ["## Payback", ""]
    lines = paybacks(rows, accuracy_tolerance_pt(run))
    out += [f"- {escape.markdown(p.sentence())}" for p in lines] or [
        "No stage changed an already evaluated model, so there is nothing to pay back."
    ]
    out += [
        "",
        "## Ledger: every window",
        "",
        md_table(
            ["window", "status", "duration", "energy", "CO2e op.", "CO2e emb.", "how measured"],
            [
                [
                    c["label"],
                    c["status"],
                    f"{c['duration_s']:.2f} s",
                    fmt_j(c["energy_j"]),
                    fmt_g(c["operational_g"]),
                    fmt_g(c["embodied_g"]),
                    c["method"],
                ]
                for c in costs
            ],
        ),
        "",
    ]
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
