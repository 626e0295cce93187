"""What the search looked at: FLOPs against held-out relation loss for every searched student,
the chosen one marked. Works on `AutoDistilResult.to_dict()` (what the stage stores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_candidates(summary: dict[str, Any], path: str | Path) -> Path:
    """A PNG scatter: one point per searched student (colour: sub-space), the chosen one circled,
    the budget a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    candidates = summary["candidates"]
    if not candidates:
        raise ValueError("the summary holds no searched students to plot")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name in dict.fromkeys(c["subspace"] for c in candidates):
        points = [c for c in candidates if c["subspace"] == name]
        ax.scatter([c["flops"] / 1e6 for c in points], [c["score"] for c in points], s=18, label=name)
    chosen = summary["chosen"]
    ax.scatter([chosen["flops"] / 1e6], [chosen["score"]], s=160, facecolors="none",
               edgecolors="black", linewidths=1.5, label=f"chosen {chosen['student']}")
    ax.axvline(summary["budget_flops"] / 1e6, color="grey", linestyle="--", linewidth=1, label="budget")
    ax.set_xlabel(f"MFLOPs per example ({summary['seq_len']} tokens)")
    ax.set_ylabel("held-out relation loss (lower is better)")
    ax.set_title("AutoDistil: searched students")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def candidates_markdown(summary: dict[str, Any]) -> str:
    """A Markdown table of the searched students, best score first, the chosen one in bold."""
    rows = sorted(summary["candidates"], key=lambda c: (c["score"], c["flops"]))
    lines = [
        f"Budget: {summary['budget_flops'] / 1e6:.1f} MFLOPs per example at {summary['seq_len']} tokens; "
        f"{len(rows)} students searched.",
        "",
        "| student | sub-space | MFLOPs | relation loss | chosen |",
        "|---|---|---:|---:|---|",
    ]
    for c in rows:
        name = f"**{c['student']}**" if c["chosen"] else c["student"]
        lines.append(f"| {name} | {c['subspace']} | {c['flops'] / 1e6:.1f} | {c['score']:.4f} | "
                     f"{'yes' if c['chosen'] else ''} |")
    return "\n".join(lines) + "\n"
