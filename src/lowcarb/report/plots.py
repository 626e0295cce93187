"""The report's figures as PNG bytes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402

from lowcarb.report import escape  # noqa: E402
from lowcarb.report.summary import ModelRow, pareto_front  # noqa: E402

_OPERATIONAL = "#d95f02"
_EMBODIED = "#7570b3"
_FRONT = "#1b9e77"


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def co2_per_stage_png(costs: Sequence[dict[str, Any]]) -> bytes:
    """Stacked bars: operational and embodied CO2e of every ledger window of the run."""
    labels = [escape.matplotlib(c["label"]) for c in costs]
    op = [c["operational_g"] for c in costs]
    emb = [c["embodied_g"] for c in costs]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2), 3.4))
    x = range(len(labels))
    ax.bar(x, op, color=_OPERATIONAL, label="operational")
    ax.bar(x, emb, bottom=op, color=_EMBODIED, label="embodied")
    ax.set_xticks(list(x), labels, rotation=30, ha="right")
    ax.set_ylabel("CO2e (g)")
    ax.set_title("CO2e per stage")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def _scatter(ax: Any, xs: list[float], ys: list[float], names: list[str], xlabel: str) -> None:
    ax.scatter(xs, ys, color="#555555", zorder=3)
    ax.margins(x=0.15)  # room for the point labels
    for x, y, name in zip(xs, ys, names, strict=True):
        ax.annotate(escape.matplotlib(name), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = sorted(pareto_front(list(zip(xs, ys, strict=True))), key=lambda i: xs[i])
    if front:
        ax.plot(
            [xs[i] for i in front],
            [ys[i] for i in front],
            color=_FRONT,
            marker="o",
            markersize=9,
            markerfacecolor="none",
            linewidth=1.5,
            label="Pareto front",
            zorder=2,
        )
        ax.legend(frameon=False, fontsize=8)
    if ys and max(ys) <= 1.0:
        # Accuracy cannot pass 1: keep matplotlib's padding from suggesting it can.
        low, _ = ax.get_ylim()
        ax.set_ylim(low, 1.0 + 0.02 * (1.0 - low))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.spines[["top", "right"]].set_visible(False)


def tradeoff_png(rows: Sequence[ModelRow], accuracy_label: str = "accuracy", unit: str = "inferences") -> bytes:
    """Accuracy against CO2e per 1,000 `unit` (inferences, or generated tokens), and against
    latency at batch 1 (per decoded token for causal LMs); Pareto fronts marked."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    pts = [r for r in rows if r.accuracy is not None and r.per1k_total_g is not None]
    _scatter(
        left,
        [r.per1k_total_g * 1000 for r in pts],  # type: ignore[operator]
        [r.accuracy for r in pts],  # type: ignore[misc]
        [r.label for r in pts],
        f"CO2e per 1,000 {unit} (mg)",
    )
    pts = [r for r in rows if r.accuracy is not None and r.latency_ms is not None]
    _scatter(
        right,
        [r.latency_ms for r in pts],  # type: ignore[misc]
        [r.accuracy for r in pts],  # type: ignore[misc]
        [r.label for r in pts],
        "decode time per token, batch 1 (ms)" if unit == "generated tokens" else "latency p50, batch 1 (ms)",
    )
    left.set_ylabel(accuracy_label)
    right.set_ylabel(accuracy_label)
    fig.suptitle("Accuracy against cost (up and left is better)")
    return _png(fig)


def generation_png(rows: Sequence[ModelRow], batch_sizes: Sequence[int]) -> bytes:
    """Causal LMs: decode tokens per second of every model at each generation batch size (bars),
    with time to first token written above each bar."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) * len(batch_sizes) + 2), 3.4))
    width = 0.8 / max(1, len(batch_sizes))
    for j, size in enumerate(batch_sizes):
        xs = [i + (j - (len(batch_sizes) - 1) / 2) * width for i in range(len(rows))]
        rates = [float(r.metrics.get(f"gen_b{size}_decode_tokens_per_s") or 0.0) for r in rows]
        bars = ax.bar(xs, rates, width, label=f"batch {size}")
        for bar, r in zip(bars, rows, strict=True):
            ttft = r.metrics.get(f"gen_b{size}_ttft_ms")
            if ttft is not None:
                ax.annotate(f"{float(ttft):.0f} ms", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)  # fmt: skip
    ax.set_xticks(list(range(len(rows))), [r.label for r in rows], rotation=20, ha="right")
    ax.set_ylabel("decode tokens / s")
    ax.set_title("Greedy decoding with the KV cache (labels: time to first token)")
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)
