"""The report's search section, from a stored search summary (no search is run here)."""

from __future__ import annotations

from lowcarb.report import render_html, render_markdown
from lowcarb.report.search import (
    pareto_png,
    render_search_html,
    search_lines,
    search_section_markdown,
    total_line,
    trial_rows,
)


def _fp(energy_j):
    return {"duration_s": 1.0, "energy_j": energy_j, "operational_g": energy_j * 1e-4,
            "embodied_g": 1e-4, "co2_g": energy_j * 1e-4 + 1e-4, "methods": {}}  # fmt: skip


def _trial(number, state, acc=None, cost=None, energy=10.0, **extra):
    metrics = {} if acc is None else {"dev_accuracy": acc, "per1k_total_g": cost}
    return {
        "number": number, "state": state, "params": {"train.lr": 0.001 * (number + 1), "width": 8},
        "metrics": metrics, "footprint": None if energy is None else _fp(energy),
        "intermediate": {"0": 0.5, "1": 0.6}, "feasible": state == "complete",
        "error": None, "retry_of": None, "worker": "host:1", **extra,
    }  # fmt: skip


SEARCH = {
    "study_name": "digits",
    "storage": "sqlite:runs/x/search.db",
    "objectives": [
        {"metric": "dev_accuracy", "direction": "maximize"},
        {"metric": "per1k_total_g", "direction": "minimize"},
    ],
    "constraints": [],
    "n_trials": 5,
    "trials": [
        _trial(0, "complete", 0.97, 0.0004, energy=30.0),
        _trial(1, "complete", 0.95, 0.0001, energy=10.0),
        _trial(2, "complete", 0.90, 0.0005, energy=20.0),
        _trial(3, "pruned", energy=4.0),
        _trial(4, "failed", energy=None, error="worker stopped beating (killed?)"),
        _trial(5, "complete", 0.96, 0.0002, energy=12.0, retry_of=4),
    ],
    "pareto": [0, 1, 5],
    "chosen": 0,
    "counts": {"complete": 4, "pruned": 1, "failed": 1},
    "total": {
        "energy_j": 76.0, "co2_g": 0.0081, "operational_g": 0.0076, "embodied_g": 0.0005,
        "duration_s": 5.0, "energy_j_by_state": {"complete": 72.0, "pruned": 4.0},
        "trials_measured": 5, "trials_without_footprint": [4],
    },  # fmt: skip
}


def test_pareto_plot_is_a_png():
    png = pareto_png(SEARCH)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_trials_table_marks_chosen_front_retries_and_unknown_footprints():
    headers, rows = trial_rows(SEARCH)
    assert headers[:4] == ["trial", "state", "train.lr", "width"]
    by_number = {r[0]: r for r in rows}
    assert by_number["0"][-1] == "chosen"
    assert by_number["1"][-1] == "Pareto"
    assert "retry of 4" in by_number["5"][-1]
    assert by_number["4"][1] == "failed" and "unknown" in by_number["4"]
    assert "stopped after step 1" in by_number["3"][-1]


def test_total_line_counts_stopped_and_failed_trials_and_says_what_is_missing():
    line = total_line(SEARCH)
    assert "76 J" in line
    assert "1 failed, 1 pruned" in line and "4 complete" in line
    assert "Stopped and failed trials account for 4 J" in line
    assert "Trials 4 have no footprint" in line and "lower bound" in line


def test_html_page_and_run_report_section():
    page = render_search_html(SEARCH)
    assert 'id="search-pareto"' in page and 'id="search-trials"' in page
    assert "Chosen trial: 0" in page
    run = {"id": "r1", "name": "digits", "status": "completed", "stages": [], "search": SEARCH}
    assert '<section id="search">' in render_html(run)
    assert "## Search" in render_markdown(run)
    assert '<section id="search">' not in render_html({**run, "search": None})


def test_markdown_and_terminal_lines():
    md = search_section_markdown(SEARCH)
    assert md.count("\n| ") >= 6  # header + 6 trials
    lines = search_lines(SEARCH)
    assert lines[0].startswith("chosen: trial 0")
    assert lines[1] == "Pareto front: trials 0, 1, 5"


def test_no_finished_trial_still_renders():
    empty = {**SEARCH, "trials": [_trial(0, "pruned")], "pareto": [], "chosen": None,
             "counts": {"pruned": 1}}  # fmt: skip
    assert pareto_png(empty)[:4] == b"\x89PNG"
    assert search_lines(empty)[0] == "chosen: none (no feasible finished trial)"


def _window(name, energy_j):
    return {"name": name, **_fp(energy_j)}


SHARED = {
    "method": "parsec",
    "study_name": "parsec:cnn",
    "storage": "",
    "objectives": [
        {"metric": "dev_accuracy", "direction": "maximize"},
        {"metric": "params", "direction": "minimize"},
    ],
    "constraints": [],
    "n_trials": 2,
    "trials": [
        {**_trial(0, "complete", energy=None), "params": {"architecture": "a"},
         "metrics": {"dev_accuracy": 0.9, "params": 1000.0}},
        {**_trial(1, "complete", energy=5.0), "params": {"architecture": "b"},
         "metrics": {"dev_accuracy": 0.8, "params": 500.0}},
    ],
    "pareto": [0, 1],
    "chosen": 0,
    "counts": {"complete": 2},
    "total": {
        "energy_j": 30.0, "co2_g": 0.003, "operational_g": 0.0028, "embodied_g": 0.0002,
        "duration_s": 2.0, "windows": [_window("parsec:search", 20.0), _window("parsec:retrain", 10.0)],
        "energy_j_by_state": {}, "trials_without_footprint": [],
    },
    "figures": {"architectures_evaluated": 8, "search_energy_j": 20.0},
}  # fmt: skip


def test_shared_work_is_accounted_by_window_and_trials_without_one_are_shared():
    headers, rows = trial_rows(SHARED)
    energy = headers.index("energy")
    assert rows[0][energy] == "shared" and rows[1][energy] == "5 J"
    assert headers[2] == "architecture" and rows[0][2] == "a"
    line = total_line(SHARED)
    assert "in parsec:search (20 J), parsec:retrain (10 J)" in line and "2 complete" in line
    assert "lower bound" not in line


def test_every_method_renders_its_name_and_headline_figures():
    page = render_search_html(SHARED)
    assert "Search (PARSEC architecture search)" in page and 'id="search-figures"' in page
    assert "architectures_evaluated</th><td>8" in page
    md = search_section_markdown(SHARED)
    assert md.startswith("## Search (PARSEC architecture search)")
    assert "| architectures_evaluated | 8 |" in md
    # an HPO summary written before `method` and `figures` existed renders as before
    assert "Search (Optuna hyperparameter search)" in render_search_html(SEARCH)
    assert 'id="search-figures"' not in render_search_html(SEARCH)


def test_a_reused_trial_says_it_cost_nothing_new():
    reused = {**_trial(2, "complete", 0.9, 1.0, energy=0.0)}
    reused["footprint"]["reused_from"] = "proxy"
    _, rows = trial_rows({**SHARED, "trials": [reused]})
    assert "same run as the proxy trial (no new cost)" in rows[0][-1]


def test_a_diverged_metric_stored_as_null_is_left_off_the_plot():
    diverged = {**_trial(6, "complete", 0.5, 0.1), "metrics": {"dev_accuracy": None, "per1k_total_g": 0.1}}
    png = pareto_png({**SEARCH, "trials": [*SEARCH["trials"], diverged]})
    assert png[:4] == b"\x89PNG"
