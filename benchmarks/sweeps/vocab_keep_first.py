"""Issue-18 sweep: how many frequent WordPiece ids the compress-all vocabulary cut keeps
(`vocab.keep_first`), chosen on HWU64's val split.

    .venv/bin/python benchmarks/sweeps/vocab_keep_first.py --runs /work/runs/td [--seeds 0,1,2]

The vocabulary cut keeps the tokens of the training text plus ids 0 .. keep_first - 1 (WordPiece
lists frequent pieces first). Only text the training set lacks is affected, so the choice cannot be
made on held-out SST-2 training phrases: they are fragments of the same sentences as the rest
(the script records the share of their tokens that the rest lacks, `sst2_heldout_oov_rate`, with
GLUE dev's beside it for comparison, not for choosing). HWU64's val utterances are written apart from its training ones, so
val measures what the cut costs on unseen text, and val is the split the recipes choose on.

For each seed, the `text-classification` model that `text_defaults.py --keep-runs DIR` kept
(DIR/text-classification-<seed>/*/model, MiniLM fine-tuned on HWU64) is cut to the tokens of
HWU64 train.csv plus the first keep_first ids, rows stored int8 (as the compress-all recipe did then;
it stores them in 4 bits since benchmarks/sweeps/vocab_row_bits.py),
and scored on val.csv, for every keep_first of KEEP_FIRST. Rule, fixed before the runs: the
smallest keep_first whose mean val accuracy over the seeds is no more than 0.2 points below that of
keep_first = 20,000 (the recipe's value so far); a smaller table is the point of the cut. Writes
benchmarks/sweeps/vocab_keep_first_hwu64.json. Run alone, like every benchmark.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from _common import machine_info, parse_seeds, sweep_started  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from lowcarb.compress.distill import vocab  # noqa: E402
from lowcarb.data import TextSplit, make_loader  # noqa: E402
from lowcarb.train import evaluate  # noqa: E402

OUT = HERE / "vocab_keep_first_hwu64.json"
HWU64_DIR = Path(os.environ.get("LOWCARB_HWU64_DIR", BENCH.parents[1] / "shared" / "data" / "hwu64"))
KEEP_FIRST = (0, 2000, 5000, 10000, 15000, 20000)
REFERENCE = 20000
TOLERANCE_PT = 0.2


def choose(mean_accuracy: dict[int, float], tolerance_pt: float = TOLERANCE_PT) -> int:
    """The rule fixed before the runs: the smallest keep_first within `tolerance_pt` points of
    keep_first = REFERENCE's mean val accuracy."""
    floor = mean_accuracy[REFERENCE] - tolerance_pt / 100
    # Rounded: accuracies are multiples of 1/1076 averaged over seeds.
    return min(k for k, acc in mean_accuracy.items() if round(acc - floor, 9) >= 0)


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def oov_rate(texts: list[str], tokenizer, keep: set[int]) -> float:
    ids = [i for row in tokenizer(texts)["input_ids"] for i in row]
    return sum(i not in keep for i in ids) / len(ids)


def sst2_oov(tokenizer) -> dict:
    """Share of tokens, with keep_first = 0, that the vocabulary of the other SST-2 training
    phrases lacks: in 2,000 held-out training phrases (heldout_split) and in GLUE dev."""
    from _sst2 import SST2_DIR, heldout_split

    rows = [line.split("\t")[0].strip() for line in (SST2_DIR / "train.tsv").read_text().splitlines()[1:]]
    held = [t.strip() for t in heldout_split(2000).texts]
    held_set = set(held)
    rest = [t for t in rows if t not in held_set]
    dev = [line.split("\t")[0] for line in (SST2_DIR / "dev.tsv").read_text().splitlines()[1:]]
    keep = set(vocab.keep_for_texts(rest, tokenizer).keep)
    return {"rest_phrases": len(rest), "heldout_phrases": len(held),
            "sst2_heldout_oov_rate": round(oov_rate(held, tokenizer, keep), 5),
            "sst2_dev_oov_rate_not_used_to_choose": round(oov_rate(dev, tokenizer, keep), 5)}


def kept_models(runs: Path, seeds: str) -> Iterator[tuple[int, Path, Any, Any, Any, float]]:
    """For each seed, the `text-classification` model text_defaults kept under `runs` (its last
    run): (seed, folder, tokenizer, model, HWU64 val loader, uncut val accuracy)."""
    val_texts, val_names = read_csv(HWU64_DIR / "val.csv")
    for seed in parse_seeds(seeds):
        folders = sorted((runs / f"text-classification-{seed}").glob("*/model"))
        if not folders:
            raise SystemExit(f"no kept text-classification model for seed {seed} under {runs}; "
                             "run benchmarks/text_defaults.py --keep-runs DIR first")
        folder = folders[-1]
        names = json.loads((folder / "lowcarb_model.json").read_text())["label_names"]
        index = {n: i for i, n in enumerate(names)}
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        val = make_loader(TextSplit(tuple(val_texts), tuple(index[n] for n in val_names)), 64,
                          tokenizer=tokenizer, max_length=128)
        yield seed, folder, tokenizer, model, val, evaluate(model, val, quiet=True)["accuracy"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, type=Path, help="text_defaults.py --keep-runs DIR")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = sweep_started()
    train_texts, _ = read_csv(HWU64_DIR / "train.csv")
    val_texts, _ = read_csv(HWU64_DIR / "val.csv")
    trials = []
    for seed, folder, tokenizer, model, val, uncut in kept_models(args.runs, args.seeds):
        for keep_first in KEEP_FIRST:
            t0 = time.perf_counter()
            config = vocab.keep_for_texts(train_texts, tokenizer, bits=8, keep_first=keep_first)
            cut = copy.deepcopy(model)
            summary = vocab.apply(cut, config)
            trials.append({"seed": seed, "model": str(folder), "keep_first": keep_first,
                           "rows": summary["vocab_after"], "table_bytes": summary["table_bytes_after"],
                           "val_accuracy": evaluate(cut, val, quiet=True)["accuracy"],
                           "uncut_val_accuracy": uncut,
                           "val_token_oov_rate": round(oov_rate(val_texts, tokenizer, set(config.keep)), 5),
                           "wall_s": round(time.perf_counter() - t0, 1)})
            print(json.dumps(trials[-1]), flush=True)
    sst2 = sst2_oov(tokenizer)
    print(json.dumps(sst2), flush=True)
    mean = {k: sum(t["val_accuracy"] for t in trials if t["keep_first"] == k)
            / sum(t["keep_first"] == k for t in trials) for k in KEEP_FIRST}
    chosen = choose(mean)
    table = {"table": "vocab_keep_first_hwu64", "command": " ".join(sys.argv), "machine": machine_info(),
             "started": started, "load_after": os.getloadavg()[0], "trials": trials,
             "mean_val_accuracy": mean, "sst2": sst2,
             "decision": {"setting": "compress-all recipe and distill_minilm.py: vocab.keep_first",
                          "chosen": chosen,
                          "rule": f"the smallest keep_first whose mean HWU64 val accuracy is no more than "
                                  f"{TOLERANCE_PT} points below keep_first={REFERENCE}'s"}}
    OUT.write_text(json.dumps(table, indent=1) + "\n")
    print(f"chosen keep_first={chosen}; wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
