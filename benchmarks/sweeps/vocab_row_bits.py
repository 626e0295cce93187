"""Issue-18 sweep: how the compress-all vocabulary cut stores its kept word-embedding rows
(`vocab.bits`, `vocab.group_size`), chosen on HWU64's val split.

    .venv/bin/python benchmarks/sweeps/vocab_row_bits.py --runs /work/runs/td [--seeds 0,1,2]

After the cut, the int8 word-embedding rows are the largest part of the compress-all model (8.73 of
its 13.98 MB on SST-2), so storing them in 4 bits is the lever on the size claim. Which storage
costs how much accuracy is measured as `vocab_keep_first.py` measures the cut: for each seed, the
`text-classification` model that `text_defaults.py --keep-runs DIR` kept (MiniLM fine-tuned on
HWU64) is cut to the tokens of HWU64 train.csv plus the first KEEP_FIRST ids (the keep_first that
sweep chose) and scored on val.csv, once per storage in STORAGES: int8 with a scale per row (the
recipe's so far) and 4-bit codes with an fp16 scale per group of 32, 64 or 128 entries.

Rule, fixed before the runs: the storage with the smallest table whose mean val accuracy over the
seeds is no more than 0.2 points below int8's. Writes benchmarks/sweeps/vocab_row_bits_hwu64.json.
Run alone, like every benchmark.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from _common import machine_info, sweep_started  # noqa: E402
from vocab_keep_first import HWU64_DIR, kept_models, read_csv  # noqa: E402

from lowcarb.compress.distill import vocab  # noqa: E402
from lowcarb.train import evaluate  # noqa: E402

OUT = HERE / "vocab_row_bits_hwu64.json"
KEEP_FIRST = 15000  # chosen by vocab_keep_first.py (vocab_keep_first_hwu64.json)
# (name, bits, group_size); the reference, int8 rows, first.
STORAGES = (("int8", 8, 32), ("int4-g32", 4, 32), ("int4-g64", 4, 64), ("int4-g128", 4, 128))
REFERENCE = "int8"
TOLERANCE_PT = 0.2


def choose(mean_accuracy: dict[str, float], table_bytes: dict[str, float],
           tolerance_pt: float = TOLERANCE_PT) -> str:
    """The rule fixed before the runs: of the storages within `tolerance_pt` points of int8's
    mean val accuracy, the one with the smallest table."""
    floor = mean_accuracy[REFERENCE] - tolerance_pt / 100
    # Rounded: accuracies are multiples of 1/1076 averaged over seeds.
    within = [name for name, acc in mean_accuracy.items() if round(acc - floor, 9) >= 0]
    return min(within, key=lambda name: table_bytes[name])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, type=Path, help="text_defaults.py --keep-runs DIR")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = sweep_started()
    train_texts, _ = read_csv(HWU64_DIR / "train.csv")
    trials = []
    for seed, folder, tokenizer, model, val, uncut in kept_models(args.runs, args.seeds):
        for name, bits, group_size in STORAGES:
            t0 = time.perf_counter()
            config = vocab.keep_for_texts(train_texts, tokenizer, bits=bits, group_size=group_size,
                                          keep_first=KEEP_FIRST)
            cut = copy.deepcopy(model)
            summary = vocab.apply(cut, config)
            trials.append({"seed": seed, "model": str(folder), "storage": name, "bits": bits,
                           "group_size": group_size if bits == 4 else None, "keep_first": KEEP_FIRST,
                           "rows": summary["vocab_after"], "table_bytes": summary["table_bytes_after"],
                           "val_accuracy": evaluate(cut, val, quiet=True)["accuracy"],
                           "uncut_val_accuracy": uncut, "wall_s": round(time.perf_counter() - t0, 1)})
            print(json.dumps(trials[-1]), flush=True)
    names = [name for name, _, _ in STORAGES]

    def mean(key: str, name: str) -> float:
        values = [t[key] for t in trials if t["storage"] == name]
        return sum(values) / len(values)

    mean_accuracy = {n: mean("val_accuracy", n) for n in names}
    table_bytes = {n: mean("table_bytes", n) for n in names}
    chosen = choose(mean_accuracy, table_bytes)
    bits, group_size = next((b, g) for n, b, g in STORAGES if n == chosen)
    table = {"table": "vocab_row_bits_hwu64", "command": " ".join(sys.argv), "machine": machine_info(),
             "started": started, "load_after": os.getloadavg()[0], "trials": trials,
             "mean_val_accuracy": mean_accuracy, "mean_table_bytes": table_bytes,
             "decision": {"setting": "compress-all recipe and distill_minilm.py: vocab.bits, vocab.group_size",
                          "chosen": chosen, "bits": bits, "group_size": group_size,
                          "rule": f"of the storages whose mean HWU64 val accuracy is no more than "
                                  f"{TOLERANCE_PT} points below {REFERENCE}'s, the smallest table"}}
    OUT.write_text(json.dumps(table, indent=1) + "\n")
    print(f"chosen {chosen} (bits {bits}, group_size {group_size}); wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
