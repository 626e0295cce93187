"""Distillation of the fine-tuned MiniLM (L6-H384) on SST-2, and the combined compress-all model.

Claims (issue 6; issue 18's targets; accuracies are means over the teachers of the training
seeds --seeds, default 0,1,2, each distilled and compressed with its own seed):
- distill.student_accuracy_ratio >= 0.97   L3 student (teacher layers 1, 3, 5) trained with logit
                                           KD: mean dev accuracy / the teachers' mean
- distill.student_speedup_b32   >= 1.8     teacher / student p50 latency, batch of 32 dev sentences
- combined.speedup_b32          >= 4.5     teacher / compress-all model, same batch
- combined.size_ratio           >= 8       teacher bytes / compress-all bytes (safetensors on disk)
- combined.accuracy_drop_pt     <= 2.0     mean(teacher) - mean(compress-all) dev accuracy, points
- combined.payback_inferences   reported   compression CO2e / CO2e saved per inference
The same L3 student is also trained four ways (hard labels, logit KD, MiniLM relations + KD,
XtremeDistil) on the first seed; the accuracy and training energy of each are figures (no target).
Latency, size and payback are measured on the first seed's models.

The compress-all model is built in this process with the library calls the recipe's stages make
(recipes/compress-all.yaml): the recipe's student (`distill.num_layers`, chosen for the chain by
benchmarks/sweeps/chain_depth.py; trained by logit KD with the budget of the students above, apart
from the L3 student when its depth differs) -> lowrank.apply (encoder Linears,
--combined-param-ratio of their parameters, default 0.75, spectral init) -> recovery (KD from the
cached teacher logits + Frobenius decay, for the budget below; the recipe's lowrank stage recovers
with cross-entropy) -> vocab.apply (word embeddings cut to the tokens of SST-2's 67k training phrases,
text only, plus the first --vocab-keep-first ids of the WordPiece vocabulary, its most frequent
pieces; rows stored as the recipe stores them, --vocab-bits) -> quantize.apply (dynamic int8 Linear, SmoothQuant strength chosen
on training batches by quantize.choose_smooth_alpha). Every step is a ledger window; the payback
sums them all, plus the chain student's KD training (its teacher-logit passes included). The order
(distil, then factorize) was kept by benchmarks/sweeps/chain_order.py against factorizing the
teacher first.

Budgets (--budget): `fixed` (the default) gives each student --epochs epochs (default 2, the
teacher's) and the recovery --recover-steps steps. `recipe` trains the students and the recovery
as the compress-all recipe's stages do: at most the recipe's epochs (6), ended by early stopping
(patience 2) with the best weights kept, where the recipe's dev split is replaced by 2,000
held-out SST-2 training phrases outside the subset (GLUE dev scores the claims). A first recipe
run (2026-12-06, stopped after seed 0's KD student to free the machine) trained that student for
7 minutes (1,872 J) to 0.8394 GLUE dev accuracy, against 0.8544 (656 J) with the fixed 2 epochs:
the held-out phrases, fragments of the training sentences, keep rewarding longer training that
GLUE dev's whole sentences do not. Not rerun to the end.
The vocabulary cut keeps the recipe's `keep_first` frequent ids (15,000, chosen on HWU64 val by
benchmarks/sweeps/vocab_keep_first.py) and stores its rows as the recipe does (4 bits, an fp16
scale per 128 entries, chosen by benchmarks/sweeps/vocab_row_bits.py; int8 per row before).

Run:  .venv/bin/python benchmarks/distill_minilm.py --rounds 9      (fixed budget, four ways on seed 0)
      .venv/bin/python benchmarks/distill_minilm.py --budget recipe --methods kd
      alone (refuses above load 1.5); needs benchmarks/.cache/minilm-sst2/seed-<s>
      (benchmarks/baseline_minilm_sst2.py). The results carry the chain's sweeps (`sweeps.chain_depth`,
      `sweeps.chain_order`: benchmarks/sweeps/chain_depth.py and chain_order.py) once they exist.
Training uses --threads torch threads (default 1); latency and inference footprints use 1 thread,
teacher and students alternated over --rounds rounds, medians reported.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    claim,
    drop_over_seeds,
    median,
    parse_and_check,
    parse_seeds,
    recipe_defaults,
    reported,
    spread,
    write_results,
)
from _sst2 import (  # noqa: E402
    MAX_LENGTH,
    SST2_DIR,
    baseline_metrics,
    dev_loader,
    example_batches,
    heldout_split,
    load_baseline,
    subset_description,
    train_loader,
)

from lowcarb.compress import lowrank, quantize  # noqa: E402
from lowcarb.compress.distill import (  # noqa: E402
    HardLabels,
    LogitKD,
    MiniLM,
    TeacherLogits,
    XtremeDistil,
    distill,
    select_layers,
    vocab,
)
from lowcarb.data import make_loader  # noqa: E402
from lowcarb.measure import track  # noqa: E402
from lowcarb.train import (  # noqa: E402
    TrainConfig,
    benchmark_latency,
    count_parameters,
    evaluate,
    inference_footprint,
    size_on_disk_bytes,
)

NAME = "distill_minilm"
# The chain's held-out sweeps: its student's depth and its order (distill before or after low rank).
SWEEPS = {name: Path(__file__).resolve().parent / "sweeps" / f"{name}_sst2.json" for name in ("chain_depth", "chain_order")}
STUDENT_LAYERS = (1, 3, 5)
# --budget recipe: the compress-all recipe's training budget as a user runs it. Its distill and
# lowrank stages train for at most `epochs` epochs, ended by early stopping on the dev split; here
# GLUE dev scores the claims, so they stop on STOP_N other SST-2 train phrases (best weights kept).
_TRAIN, _DISTILL = recipe_defaults("compress-all", "distill")
# The compress-all chain's student: the recipe's depth (chosen for the chain's three targets by
# benchmarks/sweeps/chain_depth.py), trained apart when it is not the L3 student of the
# distillation claims. Its teacher layers are select_layers' uniform choice, as the stage's.
CHAIN_DEPTH = int(_DISTILL.get("num_layers", len(STUDENT_LAYERS)))
CHAIN_APART = len(STUDENT_LAYERS) != CHAIN_DEPTH
RECIPE_EPOCHS_CAP = int(_TRAIN["epochs"])
PATIENCE = _TRAIN.get("early_stopping_patience")
STOP_N = 2000
# The recipe's vocabulary cut: the frequent WordPiece ids it keeps beside the training text's,
# and how the kept rows are stored (bits, and the 4-bit rows' group size).
_VOCAB = recipe_defaults("compress-all", "vocab")[1]
VOCAB_KEEP_FIRST = int(_VOCAB.get("keep_first", 0))
VOCAB_BITS = int(_VOCAB.get("bits", 8))
VOCAB_GROUP_SIZE = int(_VOCAB.get("group_size", 128))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def fp_figures(fp: Any) -> dict[str, Any]:
    return {
        "duration_s": round(fp.duration_s, 2),
        "energy_j": round(fp.energy_j, 2),
        "total_g": fp.total_g,
        "method": fp.components["cpu"].method if "cpu" in fp.components else None,
    }


def accuracy(model: torch.nn.Module, dev: Any) -> float:
    return round(float(evaluate(model, dev)["accuracy"]), 4)


def compress_all(teacher: torch.nn.Module, student: torch.nn.Module, tokenizer: Any, train: Any, dev: Any,
                 args: argparse.Namespace, cache: TeacherLogits, seed: int, stop: Any = None) -> dict[str, Any]:
    """The compress-all chain after the KD student: factorize + KD recovery, vocabulary cut, int8.
    stop: held-out batches the recovery stops early on (--budget recipe), or None (fixed steps)."""
    final = copy.deepcopy(student)
    combined: dict[str, Any] = {"windows": {}}
    if args.combined_param_ratio < 1.0:
        with track("factorize", unit="model", units=1) as fp:
            lr_summary = lowrank.apply(final, lowrank.LowRankConfig(param_ratio=args.combined_param_ratio,
                                                                     targets=("*encoder*",)))
        combined["windows"]["factorize"] = fp_figures(fp)
        combined["factorize"] = {"params_before": lr_summary.params_before,
                                 "params_after": lr_summary.params_after,
                                 "target_ratio": round(lr_summary["target_ratio"], 4)}
        combined["after_factorize_accuracy"] = accuracy(final, dev)
        recover = TrainConfig(epochs=-(-args.recover_steps // len(train)), max_steps=args.recover_steps,
                              batch_size=32, lr=args.recover_lr or args.lr,
                              warmup_ratio=0.1, seed=seed + 1, quiet=True)
        if stop is not None:  # the recipe's lowrank stage: the training budget, early stopping
            recover = dataclasses.replace(recover, epochs=args.epochs, max_steps=args.max_steps,
                                          early_stopping_patience=PATIENCE)
        with track("recover", unit="sample", units=args.recover_steps * 32) as fp:
            rec = distill(final, teacher, train, stop, LogitKD(temperature=2.0, alpha=0.5), recover,
                          teacher_logits=cache, extra_loss=lowrank.frobenius_decay_loss(1e-4),
                          param_groups=lowrank.param_groups(final, recover.weight_decay))
        combined["windows"]["recover"] = fp_figures(fp)
        combined["recover_steps"], combined["recover_heldout_best"] = rec.steps, rec.dev
        combined["after_recover_accuracy"] = accuracy(final, dev)
        log(f"seed {seed}: factorized + recovered: dev accuracy {combined['after_recover_accuracy']}")
    corpus = [line.split("\t")[0] for line in (SST2_DIR / "train.tsv").read_text().splitlines()[1:]]
    with track("vocab", unit="model", units=1) as fp:
        v_summary = vocab.apply(final, vocab.keep_for_texts(
            corpus, tokenizer, bits=args.vocab_bits, group_size=VOCAB_GROUP_SIZE,
            keep_first=args.vocab_keep_first))
    combined["windows"]["vocab"] = fp_figures(fp)
    combined["vocab"] = {**{k: v for k, v in v_summary.to_dict().items() if k != "config"}, "text": "SST-2 train.tsv, 67,349 phrases (text only)",
                         "keep_first": args.vocab_keep_first, "group_size": VOCAB_GROUP_SIZE if args.vocab_bits == 4 else None}
    combined["after_vocab_accuracy"] = accuracy(final, dev)
    with track("int8", unit="model", units=1) as fp:
        # As compress_minilm.py: SmoothQuant strength chosen on training batches (never dev).
        batches = [b for _, b in zip(range(24), train, strict=False)]
        alpha, alpha_errors = quantize.choose_smooth_alpha(final, quantize.DynamicInt8(),
                                                           batches[:16], batches[16:])
        q_summary = quantize.apply(final, quantize.DynamicInt8(smooth_alpha=alpha),
                                   calibration=batches[:16] if alpha is not None else None)
    combined["int8_smooth_alpha"] = {"chosen": alpha, "logit_mse": alpha_errors}
    combined["windows"]["int8"] = fp_figures(fp)
    combined["model"] = q_summary.model
    combined["dev_accuracy"] = accuracy(q_summary.model, dev)
    log(f"seed {seed}: compress-all dev accuracy {combined['dev_accuracy']}")
    return combined


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=["fixed", "recipe"], default="fixed",
                        help="fixed (default): --epochs epochs per student and --recover-steps steps of "
                             "recovery; recipe: students and the recovery train as the compress-all "
                             f"recipe's stages do, at most {RECIPE_EPOCHS_CAP} epochs ended by early "
                             f"stopping (patience {PATIENCE}) on {STOP_N} held-out SST-2 train phrases")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs of the subset per student (default: {RECIPE_EPOCHS_CAP}, the cap, "
                             "with --budget recipe; 2, as the teacher's fine-tune, with --budget fixed)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="cap on each student's optimiser steps, and with --budget recipe on the "
                             "recovery's (default: --epochs of the subset)")
    parser.add_argument("--recover-steps", type=int, default=500,
                        help="KD recovery steps after factorizing, with --budget fixed (default 500: "
                             "two epochs)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--recover-lr", type=float, default=None,
                        help="learning rate of the KD recovery after factorizing (default: --lr)")
    parser.add_argument("--vocab-keep-first", type=int, default=VOCAB_KEEP_FIRST,
                        help="the compress-all vocabulary also keeps ids below this (frequent pieces; "
                             f"default {VOCAB_KEEP_FIRST}, the recipe's)")
    parser.add_argument("--vocab-bits", type=int, choices=(8, 4), default=VOCAB_BITS,
                        help="bits of the kept word-embedding rows (default "
                             f"{VOCAB_BITS}, the recipe's; 4-bit rows in groups of {VOCAB_GROUP_SIZE})")
    parser.add_argument("--combined-param-ratio", type=float, default=0.75,
                        help="fraction of the student's encoder Linear parameters kept by lowrank "
                             "(1.0: no low-rank step)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (teachers and students)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for training (1: steadier on a shared 2-core machine)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--methods", default="hard,kd,minilm,xtremedistil",
                        help="ways to train the L3 student on the first seed (kd runs on every seed)")
    parser.add_argument("--dev-limit", type=int, default=None,
                        help="evaluate on the first N dev sentences only (smoke runs)")
    args, load = parse_and_check(parser)
    if args.epochs is None:
        args.epochs = RECIPE_EPOCHS_CAP if args.budget == "recipe" else 2
    seeds = parse_seeds(args.seeds)
    torch.set_num_threads(args.threads)
    chosen = [m for m in args.methods.split(",") if m]
    if "kd" not in chosen:
        raise SystemExit("--methods must include kd: the claims and the combined model use it")
    methods = {
        "hard": HardLabels(),
        "kd": LogitKD(temperature=2.0, alpha=0.5),
        "minilm": MiniLM(version=2, relation_heads=12, kd=LogitKD(temperature=2.0, alpha=0.5)),
        "xtremedistil": XtremeDistil(),
    }
    figures: dict[str, Any] = {"subset": subset_description(), "seeds": seeds, "per_seed": {},
                               "student": {"teacher_layers": list(STUDENT_LAYERS), "init": "layer selection",
                                           "chain_depth": CHAIN_DEPTH}}
    teacher_accs, student_accs, chain_student_accs, combined_accs = [], [], [], []
    first: dict[str, Any] = {}
    stop: Any = None
    for index, seed in enumerate(seeds):
        teacher, tokenizer = load_baseline(seed)
        if args.budget == "recipe" and stop is None:
            stop = make_loader(heldout_split(STOP_N), 64, tokenizer=tokenizer, max_length=MAX_LENGTH)
        train = train_loader(tokenizer, batch_size=32, train_seed=seed)
        dev: Any = dev_loader(tokenizer, batch_size=64)
        if args.dev_limit is not None:
            dev = list(dev)[: max(1, args.dev_limit // 64)]
        steps = min(args.max_steps or args.epochs * len(train), args.epochs * len(train))
        config = TrainConfig(epochs=args.epochs, max_steps=steps, batch_size=32, lr=args.lr,
                             warmup_ratio=0.1, seed=seed, quiet=True,
                             early_stopping_patience=PATIENCE if stop is not None else None)
        teacher_acc = accuracy(teacher, dev)
        seed_fig: dict[str, Any] = {"teacher": {"checkpoint": f"benchmarks/.cache/minilm-sst2/seed-{seed}",
                                                "baseline": baseline_metrics(seed).get("dev_after_training"),
                                                "dev_accuracy": teacher_acc}}
        log(f"seed {seed}: teacher dev accuracy {teacher_acc}; {steps} steps per student")
        # Each method gets its own cache of teacher logits, filled as its batches need them, so its
        # training energy includes the teacher passes it caused (and none that another method paid).
        ways: dict[str, Any] = {}
        students: dict[str, torch.nn.Module] = {}
        caches: dict[str, TeacherLogits] = {}
        for key in chosen if index == 0 else ["kd"]:
            student, _ = select_layers(teacher, STUDENT_LAYERS)
            with track(f"distil {key}", unit="sample", units=steps * 32) as fp:
                caches[key] = TeacherLogits(teacher)
                summary = distill(student, teacher, train, stop, methods[key], config,
                                  teacher_logits=caches[key])
            ways[key] = {
                "method": summary.method, "dev_accuracy": accuracy(student, dev), "steps": summary.steps,
                "teacher_forward_examples": summary.teacher_forward_examples, "train": fp_figures(fp),
                "heldout_best": summary.dev,
                "stages": [{k: v for k, v in s.items() if k in ("name", "steps", "train_loss", "unfreeze_every")}
                           for s in summary.stages],
            }
            students[key] = student
            log(f"seed {seed} {key}: dev accuracy {ways[key]['dev_accuracy']}, {fp.energy_j:.0f} J")
        chain_key = "kd"
        if CHAIN_APART:
            chain_key = "chain"
            student, chosen_layers = select_layers(teacher, num_layers=CHAIN_DEPTH)
            with track("distil chain student", unit="sample", units=steps * 32) as fp:
                caches[chain_key] = TeacherLogits(teacher)
                summary = distill(student, teacher, train, stop, methods["kd"], config,
                                  teacher_logits=caches[chain_key])
            seed_fig["chain_student"] = {
                "teacher_layers": list(chosen_layers.teacher_layers), "dev_accuracy": accuracy(student, dev),
                "steps": summary.steps, "train": fp_figures(fp), "heldout_best": summary.dev}
            students[chain_key] = student
            log(f"seed {seed} chain student (L{CHAIN_DEPTH}): dev accuracy "
                f"{seed_fig['chain_student']['dev_accuracy']}, {fp.energy_j:.0f} J")
        combined = compress_all(teacher, students[chain_key], tokenizer, train, dev, args, caches[chain_key],
                                seed, stop)
        seed_fig["ways"] = ways
        seed_fig["combined"] = {k: v for k, v in combined.items() if k != "model"}
        figures["per_seed"][str(seed)] = seed_fig
        teacher_accs.append(teacher_acc)
        student_accs.append(ways["kd"]["dev_accuracy"])
        chain_student_accs.append(seed_fig.get("chain_student", ways["kd"])["dev_accuracy"])
        combined_accs.append(combined["dev_accuracy"])
        if index == 0:
            first = {"teacher": teacher, "student": students["kd"], "chain_student": students[chain_key],
                     "combined": combined, "tokenizer": tokenizer, "ways": ways,
                     "chain_train": seed_fig.get("chain_student", ways["kd"])["train"]}

    # Latency and serving footprint (first seed): teacher, KD student, compress-all (and the
    # chain's own student when its depth differs), alternated.
    b1, b32 = example_batches(first["tokenizer"])
    models = {"teacher": first["teacher"], "student": first["student"], "combined": first["combined"]["model"]}
    if CHAIN_APART:
        models["chain_student"] = first["chain_student"]
    lat: dict[str, list[float]] = {k: [] for k in models}
    g_per: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.rounds):
        for key, model in models.items():
            lat[key].append(benchmark_latency(model, b32, threads=1, warmup=1, repeats=5)["p50_ms"])
    for _ in range(3):
        for key, model in models.items():
            fp = inference_footprint(model, b32, n_inferences=320, threads=1, name=f"serve {key}")
            g_per[key].append(fp.total_g / fp.units)
    latency = {k: round(median(v), 2) for k, v in lat.items()}
    g_inference = {k: median(v) for k, v in g_per.items()}
    sizes = {k: size_on_disk_bytes(m) for k, m in models.items()}
    figures["latency_b32_p50_ms"] = latency
    figures["latency_b32_rounds_ms"] = lat
    figures["latency_b1_p50_ms"] = {k: round(benchmark_latency(m, b1, threads=1, warmup=2, repeats=20)["p50_ms"], 2)
                                    for k, m in models.items()}
    figures["size_bytes"] = sizes
    figures["params"] = {k: count_parameters(m) for k, m in models.items()}
    figures["serve_g_per_inference_b32"] = g_inference
    spent_g = first["chain_train"]["total_g"] + sum(
        w["total_g"] for w in first["combined"]["windows"].values())
    saved_g = g_inference["teacher"] - g_inference["combined"]
    payback = round(spent_g / saved_g) if saved_g > 0 else None
    figures["payback"] = {"compression_total_g": spent_g, "saved_g_per_inference": saved_g}
    figures["teacher_dev_accuracy"] = spread(teacher_accs)
    figures["student_dev_accuracy"] = spread(student_accs)
    figures["chain_student_dev_accuracy"] = spread(chain_student_accs)
    figures["combined_accuracy"] = drop_over_seeds(teacher_accs, combined_accs)
    figures["settings"] = {k: v for k, v in vars(args).items()}
    figures["sweeps"] = {name: json.loads(path.read_text()) for name, path in SWEEPS.items() if path.exists()}

    student_ratio = round(spread(student_accs)["mean"] / spread(teacher_accs)["mean"], 4)
    claims = [
        claim("distill.student_accuracy_ratio", student_ratio, ">=", 0.97),
        claim("distill.student_speedup_b32", round(latency["teacher"] / latency["student"], 3), ">=", 1.8),
        claim("combined.speedup_b32", round(latency["teacher"] / latency["combined"], 3), ">=", 4.5),
        claim("combined.size_ratio", round(sizes["teacher"] / sizes["combined"], 3), ">=", 8),
        claim("combined.accuracy_drop_pt", figures["combined_accuracy"]["drop_pt"], "<=", 2.0),
        reported("combined.payback_inferences", payback),
    ]
    for key, way in first["ways"].items():
        claims.append(reported(f"distill.{key}.dev_accuracy", way["dev_accuracy"]))
        claims.append(reported(f"distill.{key}.train_energy_j", way["train"]["energy_j"]))
    path = write_results(NAME, figures, claims, load=load, args=args)
    log(f"wrote {path}")
    for c in claims:
        log(f"{c['id']}: {c['value']} (target {c['target']}, met {c['met']})")


if __name__ == "__main__":
    main()
