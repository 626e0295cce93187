"""The HPO pruning claim on a dev set large enough to decide it: MiniLM fine-tuned on SST-2 (issue 18).

Claim:
- hpo.pruning_search_energy_ratio  <= 0.6  measured energy of the whole search with the median
  pruner / without it, same seed, same budget, the two studies' trials interleaved; met only when
  the best dev accuracy found with pruning is within 0.5 points of the best without (else null).

On digits (benchmarks/hpo_digits.py) the search's dev set has 270 examples: two examples decide
half a point, so the accuracy condition was noise. Here the search's dev set is 4,000 phrases of
SST-2 train that are not in the training subset (seeded, phrases of at least --min-words words, so
that they read like sentences rather than one-word fragments): one example is 0.025 points. The
GLUE dev set (872) is not used to choose anything; the two best trials' GLUE dev accuracy is
reported beside.

Each trial fine-tunes the pretrained MiniLM on the 8,000-phrase subset (seed 0, as every MiniLM
benchmark) for --epochs epochs and reports dev accuracy every half epoch (the pruner's steps). The
search varies the body's learning rate and the fresh head's (TrainConfig.head_lr) and the warm-up;
one objective (accuracy: every trial serves the same architecture, so CO2e per inference does not
separate them). Pruner: lowcarb's median pruner, no warm-up steps, after 4 finished trials.

Run alone on a quiet machine (refuses above load 1.5; --allow-load overrides):
    .venv/bin/python benchmarks/hpo_minilm.py                 # 12 trials per study
    .venv/bin/python benchmarks/hpo_minilm.py --quick         # smoke run: tiny budgets, JSON in results/smoke/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LOWCARB_NO_STORE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import claim, parse_and_check, reported, write_results  # noqa: E402
from _sst2 import dev_loader, heldout_split, sst2_bundle, train_loader  # noqa: E402

from lowcarb.data import TextSplit, make_loader  # noqa: E402
from lowcarb.models import ModelConfig, build_model  # noqa: E402
from lowcarb.search.hpo import Objective, SearchConfig, run_search  # noqa: E402
from lowcarb.search.pruning import PruningConfig  # noqa: E402
from lowcarb.search.space import CategoricalParam, FloatParam, SearchSpace  # noqa: E402
from lowcarb.train import TrainConfig, evaluate, fit  # noqa: E402

NAME = "hpo_minilm"
SEED = 0
ACC_TOLERANCE = 0.005
SPACE = SearchSpace.of(
    {
        "train.lr": FloatParam(1e-5, 1e-3, log=True),
        "train.head_lr": FloatParam(1e-4, 1e-2, log=True),
        "train.warmup_ratio": CategoricalParam((0.0, 0.1)),
    }
)


def make_trial(args: argparse.Namespace, dev_split: TextSplit, kept: dict[str, Any]) -> Any:
    """The trial function; `kept` holds the study's best model so far (its GLUE dev is reported)."""
    bundle = sst2_bundle(args.n, SEED)

    def trial(ctx: Any) -> dict[str, float]:
        p = ctx.params
        handle = build_model(ModelConfig(name="minilm"), bundle, seed=SEED)
        tok = handle.tokenizer
        loader = train_loader(tok, 32, args.n, SEED)
        dev = make_loader(dev_split, 64, tokenizer=tok, max_length=64)
        every = max(1, len(loader) // 2)  # the pruner sees dev accuracy every half epoch

        def on_step(step: int, m: torch.nn.Module) -> bool:
            if step % every == 0:
                acc = evaluate(m, dev, quiet=True)["accuracy"]
                m.train()
                ctx.report(step // every - 1, acc)  # raises to stop a poor trial
            return False

        config = TrainConfig(epochs=args.epochs, max_steps=args.trial_max_steps, lr=p["train.lr"],
                             head_lr=p["train.head_lr"], warmup_ratio=p["train.warmup_ratio"],
                             seed=SEED, quiet=True)
        try:
            fit(handle.model, loader, None, config, on_step=on_step)
        except ValueError as exc:
            if "training loss became" not in str(exc):
                raise  # diverged (a poor learning rate): measured as it is below
        acc = evaluate(handle.model, dev, quiet=True)["accuracy"]
        if acc > kept.get("accuracy", -1.0):
            kept.update(accuracy=acc, number=ctx.number, model=handle.model)
        return {"accuracy": acc}

    return trial


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12, help="finished trials per study")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--trial-max-steps", type=int, default=None,
                    help="cap on each trial's steps: a shrunk budget, so the JSON goes to results/smoke/")
    ap.add_argument("--n", type=int, default=8000, help="training subset (as every MiniLM benchmark)")
    ap.add_argument("--dev-n", type=int, default=4000, help="held-out train phrases the search reads")
    ap.add_argument("--min-words", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, JSON in results/smoke/")
    args, load = parse_and_check(ap)
    if args.quick:
        args.trials, args.trial_max_steps, args.dev_n, args.n = 5, 4, 128, 512
    torch.set_num_threads(1)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dev_split = heldout_split(args.dev_n, args.min_words, seed=1000 + SEED, subset_n=args.n)
    base = SearchConfig(space=SPACE, objectives=(Objective("accuracy", "maximize"),),
                        n_trials=args.trials, pruning=None, seed=SEED, startup_trials=8)
    studies = {"unpruned": base,
               "pruned": dataclasses.replace(base, pruning=PruningConfig(warmup_steps=0, min_trials=4))}
    kept: dict[str, dict[str, Any]] = {name: {} for name in studies}
    results: dict[str, Any] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lowcarb-hpo-minilm-") as tmp:
        # One trial of each study in turn, so background load falls on both alike.
        for k in range(1, args.trials + 1):
            for name, cfg in studies.items():
                results[name] = run_search(make_trial(args, dev_split, kept[name]),
                                           dataclasses.replace(cfg, n_trials=k), run_dir=Path(tmp) / name)
            print(f"trial {k}/{args.trials} of each study done, {time.perf_counter() - started:.0f} s", flush=True)

    best = {}
    for name, result in results.items():
        complete = [t for t in result.trials if t.state == "complete"]
        top = max(complete, key=lambda t: t.metrics["accuracy"])
        tok = build_model(ModelConfig(name="minilm"), sst2_bundle(args.n, SEED), seed=SEED).tokenizer
        assert kept[name]["number"] == top.number  # the first trial reaching the best accuracy
        glue = evaluate(kept[name]["model"], dev_loader(tok, 64), quiet=True)["accuracy"]
        best[name] = {"trial": top.number, "params": top.params, "search_dev_accuracy": top.metrics["accuracy"],
                      "glue_dev_accuracy": glue}
    energy_ratio = results["pruned"].total["energy_j"] / results["unpruned"].total["energy_j"]
    lost_pt = (best["unpruned"]["search_dev_accuracy"] - best["pruned"]["search_dev_accuracy"]) * 100
    within = lost_pt <= ACC_TOLERANCE * 100
    figures = {
        "data": {"train": f"SST-2 train, {args.n}-phrase subset (seed {SEED})",
                 "search_dev": f"{len(dev_split)} other SST-2 train phrases of >= {args.min_words} words (seeded)",
                 "glue_dev": "reported for the best trials only, never used to choose"},
        "trials_per_study": args.trials, "epochs_per_trial": args.epochs, "threads": 1,
        "space": {name: repr(p) for name, p in SPACE.params},
        "studies": {name: {"counts": r.counts(), "energy_j": r.total["energy_j"],
                           "duration_s": r.total["duration_s"],
                           "trials": [{"number": t.number, "state": t.state, "params": t.params,
                                       "accuracy": t.metrics.get("accuracy"),
                                       "energy_j": (t.footprint or {}).get("energy_j")} for t in r.trials]}
                    for name, r in results.items()},
        "best": best,
        "energy_ratio": energy_ratio,
        "best_accuracy_lost_pt": lost_pt,
        "wall_s": time.perf_counter() - started,
    }
    claims = [
        claim("hpo.pruning_search_energy_ratio", round(energy_ratio, 4) if within else None, "<=", 0.6),
        reported("hpo.pruning_best_accuracy_lost_pt", round(lost_pt, 3)),
    ]
    for c in claims:
        print(f"{c['id']:<40} {c['value']!s:>10}  target {c['target']!s:<8} met {c['met']}")
    path = write_results(NAME, figures, claims, load=load, args=args)
    print(json.dumps(claims, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
