"""Text the HTML and markdown reports share: the summary sentence and the ledger table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lowcarb.report.formatting import fmt_g, fmt_j

LEDGER_HEADERS = ["window", "status", "duration", "energy", "CO2e op.", "CO2e emb.", "how measured"]


def summary_sentence(total: Mapping[str, float], models: int) -> str:
    """What the whole run used and emitted, and how many models it evaluated."""
    return (
        f"The run used {fmt_j(total['energy_j'])} and emitted {fmt_g(total['operational_g'])} "
        f"operational + {fmt_g(total['embodied_g'])} embodied CO2e over "
        f"{total['duration_s']:.1f} s. {models} model(s) evaluated."
    )


def ledger_rows(costs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """One row per ledger window (stage_costs), in LEDGER_HEADERS' order."""
    return [
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
    ]
