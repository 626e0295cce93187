"""The report's search section: the Pareto front, the trials, what the search itself cost.

One section for every search (HPO, PARSEC, Weightless PARSEC, AutoDistil, muTransfer): it reads a
search summary as stored (the `search.json` a search writes to its run folder, or
`lowcarb.search.result.SearchResult.to_dict()`); it runs nothing. Trials that ran in a ledger
window of their own show its energy; in searches whose work is shared between trials (PARSEC's
weight store, AutoDistil's supernets) the cost is the windows listed in the total.

    html = search_section_html(json.loads(Path("lowcarb-runs/<id>/search.json").read_text()))
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402

from lowcarb.report.formatting import fmt_g, fmt_j  # noqa: E402
from lowcarb.report.summary import SEARCH_NOTE  # noqa: E402

Search = Mapping[str, Any]

_STATE_COLORS = {"complete": "#7f7f7f", "pruned": "#e6ab02", "failed": "#d62728"}
_FRONT = "#1b9e77"
_CHOSEN = "#d95f02"


def _as_dict(result: Any) -> Search:
    return result.to_dict() if hasattr(result, "to_dict") else result


def search_summaries(run: Mapping[str, Any]) -> list[Search]:
    """Every search summary of a run: its own (`run["search"]`) and those its stages noted."""
    found = [run["search"]] if run.get("search") else []
    for record in run.get("stages") or []:
        summary = (record.get("summary") or {}).get(SEARCH_NOTE)
        if summary:
            found.append(summary)
    return found


def cost_metric(search: Search) -> str:
    """The x axis: the second objective, else the first constraint, else the trial's CO2e."""
    objectives = search["objectives"]
    if len(objectives) > 1:
        return objectives[1]["metric"]
    if search.get("constraints"):
        return search["constraints"][0]["metric"]
    return "trial_co2_g"


def _plottable(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def pareto_png(result: Any) -> bytes:
    """Quality against cost for every finished trial; the front joined, the chosen trial marked."""
    search = _as_dict(result)
    quality = search["objectives"][0]["metric"]
    cost = cost_metric(search)
    # A diverged trial's metric is stored as null (JSON has no infinity): it has no point.
    trials = [
        t for t in search["trials"] if _plottable(t["metrics"].get(quality)) and _plottable(t["metrics"].get(cost))
    ]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for state, color in _STATE_COLORS.items():
        pts = [(t["metrics"][cost], t["metrics"][quality]) for t in trials if t["state"] == state]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, s=22, color=color, alpha=0.7, label=f"{state} trials")
    front = sorted(
        (t["metrics"][cost], t["metrics"][quality])
        for t in trials
        if t["number"] in set(search.get("pareto") or ())
    )
    if front:
        ax.plot(*zip(*front, strict=True), "-o", color=_FRONT, ms=5, drawstyle="steps-post", label="Pareto front")
    chosen = next((t for t in trials if t["number"] == search.get("chosen")), None)
    if chosen is not None:
        ax.scatter(
            [chosen["metrics"][cost]],
            [chosen["metrics"][quality]],
            marker="*",
            s=260,
            color=_CHOSEN,
            edgecolor="black",
            zorder=5,
            label=f"chosen (trial {chosen['number']})",
        )
    for c in search.get("constraints") or ():
        if c["metric"] == cost:
            ax.axvline(c["max_value"], color="black", ls="--", lw=1, label=f"{cost} <= {c['max_value']:g}")
    ax.set_xlabel(cost)
    ax.set_ylabel(quality)
    ax.set_title(f"search {search['study_name']}: {quality} against {cost}")
    ax.grid(alpha=0.3)
    if trials:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no finished trial yet", ha="center", va="center", transform=ax.transAxes)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _trial_cost(search: Search, fp: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """Energy, CO2e and time of a trial's own window: "shared" when the search accounts by
    windows, "unknown" when a trial's window never closed (a killed worker)."""
    if fp:
        return fmt_j(fp["energy_j"]), fmt_g(fp["co2_g"]), f"{fp['duration_s']:.1f}"
    missing = "shared" if (search.get("total") or {}).get("windows") else "unknown"
    return missing, missing, "-"


def trial_rows(result: Any) -> tuple[list[str], list[list[str]]]:
    """The trials table: number, state, parameters, quality, cost, footprint."""
    search = _as_dict(result)
    quality = search["objectives"][0]["metric"]
    cost = cost_metric(search)
    names: list[str] = []
    for t in search["trials"]:
        names += [n for n in t["params"] if n not in names]
    headers = ["trial", "state", *names, quality, cost, "energy", "CO2e", "time (s)", "note"]
    pareto = set(search.get("pareto") or ())
    rows = []
    for t in sorted(search["trials"], key=lambda t: t["number"]):
        note = []
        if t["number"] == search.get("chosen"):
            note.append("chosen")
        elif t["number"] in pareto:
            note.append("Pareto")
        if t.get("retry_of") is not None:
            note.append(f"retry of {t['retry_of']}")
        if t["state"] == "failed" and t.get("error"):
            note.append(str(t["error"])[:80])
        if t["state"] == "pruned" and t.get("intermediate"):
            note.append(f"stopped after step {max(int(k) for k in t['intermediate'])}")
        if (t.get("footprint") or {}).get("reused_from"):
            note.append(f"same run as the {t['footprint']['reused_from']} trial (no new cost)")
        rows.append(
            [
                str(t["number"]),
                t["state"],
                *[_fmt(t["params"].get(n)) for n in names],
                _fmt(t["metrics"].get(quality)),
                _fmt(t["metrics"].get(cost)),
                *_trial_cost(search, t.get("footprint")),
                "; ".join(note),
            ]
        )
    return headers, rows


def total_line(result: Any) -> str:
    """One sentence: what the whole search cost, stopped and failed trials included."""
    search = _as_dict(result)
    total = search["total"]
    counts = search.get("counts") or {}
    parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    windows = total.get("windows") or []
    spent = "of trials" if not windows else "in " + ", ".join(
        f"{w['name']} ({fmt_j(w['energy_j'])})" for w in windows
    )
    line = (
        f"The search cost {fmt_j(total['energy_j'])} and {fmt_g(total['co2_g'])} CO2e "
        f"({fmt_g(total['operational_g'])} operational, {fmt_g(total['embodied_g'])} embodied) "
        f"over {total['duration_s']:.1f} s {spent}; trials: {parts or 'none'}."
    )
    by_state = total.get("energy_j_by_state") or {}
    wasted = sum(v for k, v in by_state.items() if k != "complete")
    if wasted:
        line += f" Stopped and failed trials account for {fmt_j(wasted)} of it."
    missing = total.get("trials_without_footprint") or []
    if missing:
        line += (
            f" Trials {', '.join(map(str, missing))} have no footprint (their worker was killed "
            f"before the window closed): the total is a lower bound."
        )
    return line


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="search-trials"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


METHOD_NAMES = {
    "hpo": "Optuna hyperparameter search",
    "parsec": "PARSEC architecture search",
    "weightless": "Weightless PARSEC architecture search",
    "autodistil": "AutoDistil student search",
    "mutransfer": "muTransfer",
}


def method_name(search: Search) -> str:
    method = str(search.get("method") or "hpo")
    return METHOD_NAMES.get(method, method)


def figure_rows(search: Search) -> list[list[str]]:
    """The search's headline numbers (muTransfer's tuning energy ratio, PARSEC's evaluated
    architectures, ...), as (name, value) rows."""
    return [[name, _fmt(value)] for name, value in (search.get("figures") or {}).items()]


def _figures_html(search: Search) -> str:
    rows = figure_rows(search)
    if not rows:
        return ""
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table id="search-figures"><tbody>{body}</tbody></table>'


def search_section_html(result: Any) -> str:
    """The search section as an HTML fragment (for the run report)."""
    search = _as_dict(result)
    png = base64.b64encode(pareto_png(search)).decode("ascii")
    headers, rows = trial_rows(search)
    objectives = ", ".join(f"{o['direction']} {o['metric']}" for o in search["objectives"])
    constraints = ", ".join(f"{c['metric']} <= {c['max_value']:g}" for c in search.get("constraints") or ())
    chosen = search.get("chosen")
    where = f" in <code>{escape(search['storage'])}</code>" if search.get("storage") else ""
    return (
        f'<section id="search"><h2>Search ({escape(method_name(search))})</h2>'
        f"<p>Study <code>{escape(search['study_name'])}</code>{where}: "
        f"{escape(objectives)}{escape('; subject to ' + constraints) if constraints else ''}. "
        f"Chosen trial: {escape(str(chosen)) if chosen is not None else 'none (no feasible finished trial)'}.</p>"
        f'<p id="search-total">{escape(total_line(search))}</p>'
        f"{_figures_html(search)}"
        f'<img id="search-pareto" alt="Pareto front: quality against cost" src="data:image/png;base64,{png}">'
        f"{_html_table(headers, rows)}</section>"
    )


def render_search_html(result: Any) -> str:
    """A self-contained page with the search section (what `lowcarb search` writes)."""
    search = _as_dict(result)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>lowcarb search {escape(search['study_name'])}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>lowcarb search: {escape(search['study_name'])}</h1>"
        f"{search_section_html(search)}</body></html>\n"
    )


def search_section_markdown(result: Any) -> str:
    """The search section as markdown (no plot: the table and the total)."""
    search = _as_dict(result)
    headers, rows = trial_rows(search)
    lines = [f"## Search ({method_name(search)})", "", total_line(search), ""]
    figures = figure_rows(search)
    if figures:
        lines += _md_table(["figure", "value"], figures) + [""]
    lines += _md_table(headers, rows)
    return "\n".join(lines) + "\n"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return out + ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]


def search_lines(result: Any) -> list[str]:
    """Terminal summary: the chosen trial and the total footprint."""
    search = _as_dict(result)
    quality = search["objectives"][0]["metric"]
    cost = cost_metric(search)
    out = []
    chosen = next((t for t in search["trials"] if t["number"] == search.get("chosen")), None)
    if chosen is None:
        out.append("chosen: none (no feasible finished trial)")
    else:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in chosen["params"].items())
        out.append(
            f"chosen: trial {chosen['number']} ({params}): {quality} "
            f"{_fmt(chosen['metrics'].get(quality))}, {cost} {_fmt(chosen['metrics'].get(cost))}"
        )
    out.append(f"Pareto front: trials {', '.join(map(str, search.get('pareto') or [])) or 'none'}")
    out.append(total_line(search))
    return out
