"""Two runs side by side: the final model of each, its quality, speed and CO2e, and the run totals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lowcarb.report.formatting import fmt_bytes, fmt_g, fmt_j, fmt_ms, fmt_num, fmt_pct
from lowcarb.report.summary import ModelRow, Run, accuracy_of, model_rows, totals


def _final(run: Run) -> ModelRow | None:
    rows = model_rows(run)
    return rows[-1] if rows else None


def _metric(row: ModelRow | None, key: str) -> float | None:
    if row is None:
        return None
    value = row.metrics.get(key)
    return None if value is None else float(value)


def _lm_lines(fa: ModelRow | None, fb: ModelRow | None) -> list[tuple[str, Any, Any, Callable[[Any], str], str]]:
    """Per-token quantities, when either final model is a causal LM."""
    if not any(r is not None and r.is_lm for r in (fa, fb)):
        return []
    split = "test" if all(_metric(r, "test_perplexity") is not None for r in (fa, fb)) else "dev"
    return [
        (f"{split} perplexity", _metric(fa, f"{split}_perplexity"), _metric(fb, f"{split}_perplexity"),
         lambda v: f"{v:.4g}", "ratio"),
        ("first token b=1", _metric(fa, "gen_b1_ttft_ms"), _metric(fb, "gen_b1_ttft_ms"), fmt_ms, "ratio"),
        ("decode tok/s b=1", _metric(fa, "gen_b1_decode_tokens_per_s"), _metric(fb, "gen_b1_decode_tokens_per_s"),
         lambda v: f"{v:.3g}", "ratio"),
        ("energy / 1k tok.", _metric(fa, "per1k_tokens_energy_j"), _metric(fb, "per1k_tokens_energy_j"), fmt_j, "ratio"),
        ("CO2e / 1k tok.", _metric(fa, "per1k_tokens_total_g"), _metric(fb, "per1k_tokens_total_g"), fmt_g, "ratio"),
    ]  # fmt: skip


def _measured_on(row: ModelRow | None) -> str:
    if row is None or row.metrics.get("device") is None:
        return "-"
    m = row.metrics
    return f"{m['device']} ({m.get('device_name')}), {m.get('precision')}, {m.get('threads')} thread(s)"


def compare_rows(a: Run, b: Run) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): one line per quantity, the two runs and B relative to A."""
    fa, fb = _final(a), _final(b)
    ta, tb = totals(a), totals(b)

    def ratio(x: float | None, y: float | None) -> str:
        if x is None or y is None or x == 0:
            return "-"
        return f"{y / x:.3g}x"

    def diff_points(x: float | None, y: float | None) -> str:
        if x is None or y is None:
            return "-"
        return f"{(y - x) * 100:+.2f} points"

    lines: list[tuple[str, float | None, float | None, Callable[[Any], str], str]] = [
        ("final model", None, None, str, ""),
        (
            "accuracy",
            None if fa is None else accuracy_of(fa.metrics),
            None if fb is None else accuracy_of(fb.metrics),
            fmt_pct,
            "points",
        ),
        (
            "latency p50 b=1",
            _metric(fa, "latency_b1_p50_ms"),
            _metric(fb, "latency_b1_p50_ms"),
            fmt_ms,
            "ratio",
        ),
        ("params", _metric(fa, "params"), _metric(fb, "params"), fmt_num, "ratio"),
        ("size", _metric(fa, "size_bytes"), _metric(fb, "size_bytes"), fmt_bytes, "ratio"),
        (
            "FLOPs / example",
            _metric(fa, "flops_per_example"),
            _metric(fb, "flops_per_example"),
            fmt_num,
            "ratio",
        ),
        (
            "energy / 1k inf.",
            _metric(fa, "per1k_energy_j"),
            _metric(fb, "per1k_energy_j"),
            fmt_j,
            "ratio",
        ),
        (
            "CO2e / 1k inf.",
            _metric(fa, "per1k_total_g"),
            _metric(fb, "per1k_total_g"),
            fmt_g,
            "ratio",
        ),
        *_lm_lines(fa, fb),
        ("run energy", ta["energy_j"], tb["energy_j"], fmt_j, "ratio"),
        ("run CO2e op.", ta["operational_g"], tb["operational_g"], fmt_g, "ratio"),
        ("run CO2e emb.", ta["embodied_g"], tb["embodied_g"], fmt_g, "ratio"),
        ("run duration", ta["duration_s"], tb["duration_s"], lambda s: f"{s:.1f} s", "ratio"),
    ]
    headers = [
        "",
        f"A: {a.get('name')} ({a.get('id')})",
        f"B: {b.get('name')} ({b.get('id')})",
        "B vs A",
    ]
    body = []
    for label, x, y, fmt, kind in lines:
        if label == "final model":
            body.append([label, fa.label if fa else "-", fb.label if fb else "-", ""])
            # Where each final model was timed: latency and energy compare only on like hardware.
            where = [_measured_on(fa), _measured_on(fb)]
            body.append(["measured on", *where, "same" if where[0] == where[1] else "differs"])
            continue
        rel = diff_points(x, y) if kind == "points" else ratio(x, y)
        body.append(
            [label, fmt(x) if x is not None else "-", fmt(y) if y is not None else "-", rel]
        )
    return headers, body
