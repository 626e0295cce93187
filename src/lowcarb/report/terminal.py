"""The short tables `lowcarb run` and `lowcarb compare` print (rich).

Every string goes in as a rich `Text` (`escape.terminal`): a run named `[/bold] x` or
`[link=...]` is shown as typed, never read as markup, whatever console prints the table.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from lowcarb.report.escape import plain, terminal
from lowcarb.report.formatting import fmt_bytes, fmt_g, fmt_j, fmt_ms, fmt_pct
from lowcarb.report.lm import lm_split, weights_notes
from lowcarb.report.summary import (
    ModelRow,
    Run,
    accuracy_split,
    accuracy_tolerance_pt,
    model_rows,
    paybacks,
)


def final_table(run: Run) -> Table:
    """One line per evaluated model: accuracy, latency, size, CO2e per 1,000 inferences, cost."""
    rows = model_rows(run)
    if rows and all(r.is_lm for r in rows):
        return lm_final_table(run, rows)
    split = accuracy_split(rows)
    # Models that lost more accuracy than the tolerance against the model before them: in red.
    lost = {p.label for p in paybacks(rows, accuracy_tolerance_pt(run)) if p.accuracy_lost}
    table = Table(
        title=terminal(f"lowcarb run {run.get('id')} ({run.get('name')}): {run.get('status')}")
    )
    for header in (
        "model",
        f"{split} acc.",
        "p50 b=1",
        "size",
        "energy / 1k inf.",
        "CO2e / 1k inf.",
        "stage CO2e",
    ):
        table.add_column(header, justify="left" if header == "model" else "right")
    for r in rows:
        m = r.metrics
        table.add_row(
            terminal(r.label),
            fmt_pct(m.get(f"{split}_accuracy")),
            fmt_ms(m.get("latency_b1_p50_ms")),
            fmt_bytes(m.get("size_bytes")),
            fmt_j(m.get("per1k_energy_j")),
            fmt_g(r.per1k_total_g),
            fmt_g(r.cost_total_g) if r.version else "-",
            style="bold red" if r.label in lost else None,
        )
    return table


def lm_final_table(run: Run, rows: list[ModelRow]) -> Table:
    """Causal LMs: exact match, perplexity, decode rate at batch 1, CO2e per 1,000 generated tokens."""
    split = lm_split(rows)
    table = Table(
        title=terminal(f"lowcarb run {run.get('id')} ({run.get('name')}): {run.get('status')}")
    )
    for header in (
        "model", f"{split} exact match", f"{split} perplexity", "decode tok/s b=1", "size",
        "energy / 1k tok.", "CO2e / 1k tok.", "stage CO2e",
    ):  # fmt: skip
        table.add_column(header, justify="left" if header == "model" else "right")
    for r in rows:
        m = r.metrics
        ppl, rate = m.get(f"{split}_perplexity"), m.get("gen_b1_decode_tokens_per_s")
        table.add_row(
            terminal(r.label),
            fmt_pct(m.get(f"{split}_exact_match")),
            "-" if ppl is None else f"{ppl:.4g}",
            "-" if rate is None else f"{rate:.3g}",
            fmt_bytes(m.get("size_bytes")),
            fmt_j(m.get("per1k_tokens_energy_j")),
            fmt_g(r.per1k_total_g),
            fmt_g(r.cost_total_g) if r.version else "-",
        )
    notes = weights_notes(run)
    if notes:
        table.caption = terminal("Note: " + "; ".join(notes))
    return table


def payback_lines(run: Run) -> list[str]:
    return [plain(p.sentence()) for p in paybacks(model_rows(run), accuracy_tolerance_pt(run))]


def table_from_rows(title: str, headers: list[str], body: list[list[Any]]) -> Table:
    table = Table(title=terminal(title))
    for i, header in enumerate(headers):
        table.add_column(terminal(header), justify="left" if i == 0 else "right")
    for row in body:
        table.add_row(*[terminal(c) for c in row])
    return table
