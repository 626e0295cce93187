"""Issue-18 sweep: EarlyBERT's mask interval and stop window, on held-out SST-2 train.

    .venv/bin/python benchmarks/sweeps/earlybert_stop.py [--seed 0]

The search draws a mask every `mask_every` steps and stops once the last `window` masks are within
0.1 of their predecessor; its steps cost more than a training step (the full model plus the
coefficients), so a stop that fires earlier makes the whole run cheaper, if the ticket it draws is
as good. Each setting below runs exactly what `earlybert_rewind.py` runs without rewinding (seed 0,
the baseline's budget: the pruned network trains for 500 steps less the search's); the current
setting (mask every 5 steps, window 5) is that sweep's no-rewind trial, read from
earlybert_rewind_sst2.json (same code path, fixed seeds). Chosen on 2,000 held-out SST-2 train
phrases; GLUE dev logged beside, never used to choose. Rule, fixed before the runs: the setting
whose search stops first among those whose held-out accuracy is no more than 0.5 points below the
current setting's (ties: the current one). Writes benchmarks/sweeps/earlybert_stop_sst2.json. Run
alone, like every benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import machine_info, sweep_started  # noqa: E402
from earlybert_rewind import run  # noqa: E402

OUT = HERE / "earlybert_stop_sst2.json"
REFERENCE = HERE / "earlybert_rewind_sst2.json"
CURRENT = (5, 5)
SETTINGS = ((5, 3), (3, 5))  # (mask_every, window): a shorter window, denser masks
TOLERANCE_PT = 0.5


def choose(trials: list[dict], tolerance_pt: float = TOLERANCE_PT) -> tuple[int, int]:
    """The rule fixed before the runs: the earliest stop within `tolerance_pt` points of the
    current setting's held-out accuracy; the current setting on ties."""
    current = next(t for t in trials if (t["mask_every"], t["window"]) == CURRENT)
    floor = current["heldout_accuracy"] - tolerance_pt / 100
    fine = [t for t in trials if round(t["heldout_accuracy"] - floor, 9) >= 0]
    best = min(fine, key=lambda t: (t["search_steps"], (t["mask_every"], t["window"]) != CURRENT))
    return best["mask_every"], best["window"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    started = sweep_started()
    reference = next(t for t in json.loads(REFERENCE.read_text())["trials"]
                     if not t["rewind"] and t["seed"] == args.seed)
    trials = [{**reference, "mask_every": CURRENT[0], "window": CURRENT[1],
               "source": f"{REFERENCE.name} (the no-rewind trial)"}]
    for mask_every, window in SETTINGS:
        trial = run(False, args.seed, mask_every=mask_every, window=window)
        trials.append({**trial, "mask_every": mask_every, "window": window})
        print(json.dumps(trials[-1]), flush=True)
    chosen = choose(trials)
    table = {"table": "earlybert_stop_sst2", "command": " ".join(sys.argv), "machine": machine_info(),
             "started": started, "trials": trials,
             "decision": {"setting": "earlybert-minilm recipe and earlybert_minilm.py: "
                                     "mask_every_steps, window",
                          "chosen": {"mask_every_steps": chosen[0], "window": chosen[1]},
                          "rule": f"the earliest stop among the settings within {TOLERANCE_PT} points of "
                                  f"mask every {CURRENT[0]}, window {CURRENT[1]} on held-out accuracy "
                                  "(seed 0, no rewind, the baseline's budget)"}}
    OUT.write_text(json.dumps(table, indent=1) + "\n")
    print(f"chosen mask_every={chosen[0]}, window={chosen[1]}; wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
