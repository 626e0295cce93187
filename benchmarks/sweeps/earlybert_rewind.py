"""Issue-18 sweep: EarlyBERT with and without rewinding, on held-out SST-2 train.

    .venv/bin/python benchmarks/sweeps/earlybert_rewind.py [--seed 0]

Both settings run what `earlybert_minilm.py` runs for one seed (pretrained MiniLM + fresh head,
the baseline's subset, batches, lr, 2 epochs = 500 steps of 32, 1 thread; search with a mask every
5 steps, stop when 5 masks agree within 0.1):
- rewind:    the ticket is applied to the pretrained weights, which train for the whole 500 steps
             (EarlyBERT's recipe, the earlybert-minilm stage's default so far);
- no rewind: the ticket is applied to the weights the search trained (its coefficients multiplied
             in), which train for the 500 steps less the search's.
The choice is made on 2,000 SST-2 train phrases outside the 8,000-phrase subset (`heldout_split`);
GLUE dev is logged beside, never used to choose. Rule, fixed before the runs: no rewind unless its
held-out accuracy is more than 0.5 points below rewinding's, since it trains fewer steps (the
search's count against the budget). Writes benchmarks/sweeps/earlybert_rewind_sst2.json. Run
alone, like every benchmark.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from _common import machine_info, sweep_started  # noqa: E402
from _sst2 import (  # noqa: E402
    DEFAULT_SEED,
    MAX_LENGTH,
    baseline_metrics,
    dev_loader,
    heldout_split,
    sst2_bundle,
    train_loader,
)
from earlybert_minilm import earlybird_config, search_prune_train  # noqa: E402

from lowcarb.data import make_loader  # noqa: E402
from lowcarb.models import ModelConfig, build_model  # noqa: E402
from lowcarb.train import TrainConfig, evaluate  # noqa: E402

OUT = HERE / "earlybert_rewind_sst2.json"
TOLERANCE_PT = 0.5
HELDOUT_N = 2000


def choose(heldout: dict[bool, float], tolerance_pt: float = TOLERANCE_PT) -> bool:
    """The rule fixed before the runs: True (rewind) only when not rewinding loses more than
    `tolerance_pt` points of held-out accuracy."""
    # Accuracies are multiples of 1/2000: round the gap so that exactly 0.5 points is within it.
    return round(heldout[True] - heldout[False], 9) > tolerance_pt / 100


def run(rewind: bool, seed: int, mask_every: int = 5, window: int = 5) -> dict:
    """One setting on `seed`: search (a mask every `mask_every` steps, stop when `window` agree),
    prune, train, score on the held-out phrases (and GLUE dev, logged only)."""
    base = baseline_metrics(seed)
    tc = base["train_config"]
    n, threads = base["subset"]["n"], int(base.get("torch_threads") or 1)
    torch.set_num_threads(threads)
    handle = build_model(ModelConfig(name="minilm"), sst2_bundle(n, DEFAULT_SEED), seed=seed)
    loader = train_loader(handle.tokenizer, tc["batch_size"], n, DEFAULT_SEED, train_seed=seed)
    train_cfg = TrainConfig(epochs=tc["epochs"], batch_size=tc["batch_size"], lr=tc["lr"],
                            head_lr=tc.get("head_lr"), warmup_ratio=0.1, weight_decay=0.01,
                            grad_clip_norm=1.0, seed=seed, quiet=True)
    started = time.perf_counter()
    out = search_prune_train(handle.model, loader, earlybird_config(len(loader), mask_every, window), train_cfg,
                             dataclasses.replace(train_cfg), rewind, False,
                             f"rewind={rewind} seed {seed}")
    heldout = make_loader(heldout_split(HELDOUT_N, subset_n=n), 64, tokenizer=handle.tokenizer,
                          max_length=MAX_LENGTH)
    return {"rewind": rewind, "seed": seed,
            "choose_split": f"{HELDOUT_N} held-out SST-2 train phrases (heldout_split)",
            "heldout_accuracy": evaluate(out["pruned"], heldout, quiet=True)["accuracy"],
            "glue_dev_accuracy_logged_only": evaluate(out["pruned"], dev_loader(handle.tokenizer, 64),
                                                      quiet=True)["accuracy"],
            "search_steps": out["ticket"].stop_step, "train_steps": out["result"].steps,
            "search_energy_j": out["search_fp"].energy_j, "train_energy_j": out["train_fp"].energy_j,
            "train_loss_end": out["result"].train_loss, "torch_threads": threads,
            "wall_s": time.perf_counter() - started, "load_after": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    started = sweep_started()
    trials = []
    for rewind in (True, False):
        trials.append(run(rewind, args.seed))
        print(json.dumps(trials[-1]), flush=True)
    chosen = choose({t["rewind"]: t["heldout_accuracy"] for t in trials})
    table = {"table": "earlybert_rewind_sst2", "command": " ".join(sys.argv), "machine": machine_info(),
             "started": started, "trials": trials,
             "decision": {"setting": "earlybert-minilm recipe and earlybert_minilm.py: rewind",
                          "chosen": chosen,
                          "rule": f"no rewind unless its held-out accuracy is more than {TOLERANCE_PT} "
                                  "points below rewinding's (seed 0, the baseline's budget)"}}
    OUT.write_text(json.dumps(table, indent=1) + "\n")
    print(f"chosen rewind={chosen}; wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
