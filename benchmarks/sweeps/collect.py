"""Collect the issue-18 sweep logs (one JSON line per trial, written by the harness in this folder)
into the tables the benchmark results files carry as their `sweeps` entry.

    python benchmarks/sweeps/collect.py /work/sweeps        # LOG_DIR holds <sweep>.jsonl files

Each table lists every trial as logged (configuration, seed, the split used to choose, per-epoch
accuracy on it, the split reported, steps, wall and CPU seconds, the load average when it ended),
and names the recipe default each sweep chose, with the rule used to choose it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Output table -> (log files it gathers, what was chosen and how). The choice is stated here and
# checked against the logs: collect.py fails if the named trial is missing.
TABLES: dict[str, dict[str, Any]] = {
    "hwu64": {"logs": ["hwu64_full", "hwu64_lora", "hwu64_earlybert", "hwu64_lowrank", "hwu64_distill", "hwu64_chain"]},
    "full_sst2": {"logs": ["sst2_full"]},
    "lora_sst2": {"logs": ["sst2_lora", "sst2_full"]},
    "lowrank_sst2": {"logs": ["sst2_lowrank"]},
    "earlybert_sst2": {"logs": ["sst2_earlybert", "earlybert_steps"]},
    "compress_all_sst2": {"logs": ["sst2_distill", "sst2_chain"]},
    "weightless": {"logs": ["weightless_tau", "weightless_ratio"]},
}
DECISIONS = HERE / "decisions.json"


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(log_dir: str) -> int:
    folder = Path(log_dir)
    decisions = json.loads(DECISIONS.read_text()) if DECISIONS.exists() else {}
    for table, spec in TABLES.items():
        trials = [t for name in spec["logs"] for t in read_log(folder / f"{name}.jsonl")]
        if not trials:
            continue
        out = {"table": table, "source": f"{', '.join(n + '.jsonl' for n in spec['logs'])}",
               "trials": trials, "decisions": decisions.get(table, [])}
        for decision in out["decisions"]:
            tags = {t.get("tag") for t in trials}
            missing = [tag for tag in decision.get("evidence", []) if tag not in tags]
            if missing:
                raise SystemExit(f"{table}: decision {decision['setting']!r} cites trials {missing} "
                                 "that are not in the logs")
        (HERE / f"{table}.json").write_text(json.dumps(out, indent=1) + "\n")
        print(f"{table}: {len(trials)} trials")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: collect.py LOG_DIR")
    sys.exit(main(sys.argv[1]))
