"""AutoDistil on the fine-tuned MiniLM (L6-H384) teacher, SST-2: searched student vs hand-made L3.

Claims (issue 10; issue 18: three seeds):
- autodistil.accuracy_vs_handmade_pt >= 0.0   mean dev accuracy (points) of the AutoDistil student
      minus the mean of the hand-made L3 layer-selection student (teacher blocks 1, 3, 5, logit KD
      as in distill_minilm.py), both fine-tuned here from the teacher of each training seed
      (--seeds, default 0,1,2) with that seed, on the same subset with the same steps; the search
      (seed 0's teacher) runs once, under the hand-made student's FLOPs, so the searched student
      has equal or lower FLOPs. The search runs once per sub-space count K in --subspaces
      (default 2 and 3) and keeps the K whose chosen student has the lowest held-out relation
      loss (`autodistil_partitions`): which students share a supernet depends on K, and in the
      separate runs of issue 18 K = 2's chosen student had the lower held-out loss (0.2386
      against 0.2479 for K = 3, whose supernets held none of the budget's largest students).
      `--subspaces 3` alone (the headline before) writes autodistil_minilm_k3.json.
- autodistil.search_energy_vs_separate_ratio <= 0.3   (supernet training + search energy) /
      (energy to distil every searched candidate separately with the same task-agnostic relation
      loss and the same steps a supernet got); with several K, the supernets and searches of
      every K against every distinct candidate that any of them scored. Only a few candidates
      are distilled separately (--separate, for --separate-steps steps each): their energy per
      step is fitted linearly against the candidate's FLOPs, and the fit is extrapolated to all
      candidates and to the supernet's step count. The JSON says which were measured.

Both students are fine-tuned the same way after they exist: logit KD (T=2, alpha=0.5) from the
teacher, --finetune-steps steps of 32 phrases, each at the lr the same held-out sweep chose for it
(benchmarks/sweeps/autodistil_finetune_lr.py: 5e-5 to 4e-4 for both students, scored on 2,000
SST-2 training phrases outside the subset, GLUE dev never read; 1e-4 for both before it; --lr sets
one lr for both). The supernet steps (600) were compared with 1,200 by
benchmarks/sweeps/autodistil_supernet_steps.py on the same phrases. Both sweeps' tables go into the
results as `sweeps`. The AutoDistil student comes from
supernets trained on the subset's texts without labels (MiniLMv2 relations), searched on 4 batches
of held-out SST-2 training phrases that are not in the subset.

Run:  .venv/bin/python benchmarks/autodistil_minilm.py [--supernet-steps N] [--finetune-steps N]
      alone (refuses above load 1.5); needs benchmarks/.cache/minilm-sst2/seed-<s>
      (benchmarks/baseline_minilm_sst2.py). All training and evaluation use 1 torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    claim,
    drop_over_seeds,
    parse_and_check,
    parse_seeds,
    reported,
    results_dir_for,
    smoke_options,
    write_results,
)
from _sst2 import (  # noqa: E402
    MAX_LENGTH,
    baseline_metrics,
    dev_loader,
    load_baseline,
    load_subset,
    subset_description,
    train_loader,
)

from lowcarb.compress.distill import (  # noqa: E402
    LogitKD,
    MiniLM,
    StudentConfig,
    build_student,
    distil_task_agnostic,
    distill,
    select_layers,
)
from lowcarb.data import TextSplit, make_loader  # noqa: E402
from lowcarb.measure import track  # noqa: E402
from lowcarb.search.autodistil import (  # noqa: E402
    AutoDistilConfig,
    SubnetConfig,
    autodistil_partitions,
    candidates_markdown,
    plot_candidates,
    subnet_flops,
)
from lowcarb.train import TrainConfig, count_parameters, evaluate, flops_per_example  # noqa: E402

NAME = "autodistil_minilm"
HANDMADE_LAYERS = (1, 3, 5)
STUDENTS = ("handmade", "autodistil")
DEFAULT_LR = 1e-4  # the fine-tuning lr of both students before the lr sweep
LR_SWEEP = Path(__file__).resolve().parent / "sweeps" / "autodistil_finetune_lr_sst2.json"
STEPS_SWEEP = Path(__file__).resolve().parent / "sweeps" / "autodistil_supernet_steps_sst2.json"
RESULTS = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def fp_figures(fp: Any) -> dict[str, Any]:
    return {"duration_s": round(fp.duration_s, 2), "energy_j": round(fp.energy_j, 2),
            "total_g": fp.total_g,
            "method": fp.components["cpu"].method if "cpu" in fp.components else None}


def accuracy(model: torch.nn.Module, dev: Any) -> float:
    return round(float(evaluate(model, dev)["accuracy"]), 4)


def counted_flops(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    # Eager attention so lowcarb.train's counter sees the attention matmuls too.
    model.set_attn_implementation("eager")
    try:
        return flops_per_example(model, batch)
    finally:
        model.set_attn_implementation("sdpa")


def search_config(budget: float, supernet_steps: int, supernet_lr: float) -> AutoDistilConfig:
    """The search's settings, shared with the fine-tuning lr sweep (benchmarks/sweeps/
    autodistil_finetune_lr.py), so that the sweep tunes the student this benchmark scores."""
    return AutoDistilConfig(flops_budget=budget, seq_len=MAX_LENGTH, steps_per_subspace=supernet_steps,
                            lr=supernet_lr, seed=0)


def finetune_student(model: torch.nn.Module, teacher: torch.nn.Module, loader: Any, *, seed: int,
                     steps: int, lr: float) -> None:
    """How both students are fine-tuned after they exist: logit KD (T=2, alpha=0.5) from the
    teacher, `steps` steps of `loader`'s batches at `lr` (10 % warm-up). Give every student a
    fresh `train_loader(..., train_seed=seed)`: each then sees the same batches in the same order
    (a shared loader's shuffle advances every time it is iterated, e.g. by supernet training)."""
    config = TrainConfig(epochs=max(1, -(-steps // len(loader))), max_steps=steps, batch_size=32, lr=lr,
                         warmup_ratio=0.1, seed=seed, quiet=True)
    distill(model, teacher, loader, None, LogitKD(temperature=2.0, alpha=0.5), config)


# The settings the lr sweep must share with a run that uses its choice: another search or another
# fine-tuning budget would make the swept lrs those of different students.
SWEPT_SETTINGS = ("supernet_steps", "supernet_lr", "subspaces", "score_batches", "finetune_steps", "n")


def swept_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The SWEPT_SETTINGS of a command line, sub-space counts as a sorted list."""
    out = {k: getattr(args, k) for k in SWEPT_SETTINGS}
    out["subspaces"] = sorted({int(k) for k in str(args.subspaces).split(",")})
    return out


def swept_lrs(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, Any] | None]:
    """Each student's fine-tuning lr: --lr for both when given, else the lr sweep's choice per
    student (benchmarks/sweeps/autodistil_finetune_lr_sst2.json), else DEFAULT_LR. Returns
    ({student: lr}, the sweep's table or None). Stops when the sweep ran with other settings."""
    if args.lr is not None:
        return {key: args.lr for key in STUDENTS}, None
    if not LR_SWEEP.exists():
        return {key: DEFAULT_LR for key in STUDENTS}, None
    table = json.loads(LR_SWEEP.read_text())
    swept = table.get("settings", {})
    mine = swept_settings(args)
    differ = [f"--{k.replace('_', '-')} {mine[k]} (swept with {swept[k]})"
              for k in SWEPT_SETTINGS if k in swept and swept[k] != mine[k]]
    if differ:
        raise SystemExit(f"{LR_SWEEP} chose the lrs for other settings: {', '.join(differ)}. Run with the "
                         "sweep's settings, rerun the sweep with these, or give --lr")
    return {key: float(table["decision"]["chosen"][key]) for key in STUDENTS}, table


def check_swept_student(table: dict[str, Any] | None, student: str) -> None:
    """The lr sweep tuned the student this run searched, or this run stops before fine-tuning."""
    if table is not None and table["search"]["student"] != student:
        raise SystemExit(f"the search chose {student}, but {LR_SWEEP} tuned the lrs for "
                         f"{table['search']['student']}: rerun the sweep, or give --lr")


def heldout_loader(tokenizer: Any, subset_texts: set[str], batches: int) -> list[dict[str, torch.Tensor]]:
    """Training phrases that are not in the subset (another seed's draw, minus the overlap)."""
    other = load_subset(1000, seed=1)
    keep = [i for i, t in enumerate(other.texts) if t not in subset_texts][: batches * 32]
    split = TextSplit(tuple(other.texts[i] for i in keep), tuple(0 for _ in keep), "held-out")
    loader = make_loader(split, 32, shuffle=False, tokenizer=tokenizer, max_length=MAX_LENGTH)
    return [{k: v for k, v in b.items() if k != "labels"} for b in loader]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet-steps", type=int, default=600, help="steps per trained sub-space")
    parser.add_argument("--finetune-steps", type=int, default=500, help="KD steps for each student")
    parser.add_argument("--separate", type=int, default=3, help="candidates distilled separately")
    parser.add_argument("--separate-steps", type=int, default=40,
                        help="steps of each separate distillation (extrapolated to --supernet-steps)")
    parser.add_argument("--n", type=int, default=8000, help="SST-2 subset size")
    parser.add_argument("--lr", type=float, default=None,
                        help="fine-tuning lr of both students (default: each student's lr chosen by "
                        "benchmarks/sweeps/autodistil_finetune_lr.py, or 1e-4 before that sweep exists)")
    parser.add_argument("--supernet-lr", type=float, default=2e-4)
    parser.add_argument("--subspaces", default="2,3",
                        help="sub-space counts K, comma-separated (default 2,3): one AutoDistil search per K, "
                        "the K whose chosen student has the lowest held-out relation loss wins "
                        "(autodistil_partitions). One K alone writes autodistil_minilm_k<K>.json with claim "
                        "ids autodistil.k<K>.*")
    parser.add_argument("--score-batches", type=int, default=4, help="held-out batches of 32 for the search")
    parser.add_argument("--skip-init-eval", action="store_true",
                        help="do not evaluate the students before fine-tuning (saves time)")
    parser.add_argument("--dev-limit", type=int, default=None, help="first N dev sentences (smoke runs)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of the fine-tuned students")
    args, load = parse_and_check(parser)
    seeds = parse_seeds(args.seeds)
    try:
        if min(int(k) for k in args.subspaces.split(",")) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--subspaces takes sub-space counts >= 1 like 3 or 2,3, got {args.subspaces!r}")
    torch.set_num_threads(1)

    teacher, tokenizer = load_baseline(seeds[0])
    subset = load_subset(args.n)
    train = train_loader(tokenizer, batch_size=32, n=args.n)
    dev = dev_loader(tokenizer, batch_size=64)
    if args.dev_limit is not None:
        dev = list(dev)[: max(1, args.dev_limit // 64)]
    held_out = heldout_loader(tokenizer, set(subset.texts), batches=args.score_batches)
    # A full-length batch: FLOPs are compared at MAX_LENGTH tokens, the budget's length.
    probe = {"input_ids": torch.full((2, MAX_LENGTH), 1000), "attention_mask": torch.ones(2, MAX_LENGTH, dtype=torch.long)}

    lrs, lr_sweep = swept_lrs(args)
    figures: dict[str, Any] = {
        "subset": subset_description(args.n),
        "teacher": {"checkpoint": f"benchmarks/.cache/minilm-sst2/seed-{seeds[0]} (the search); "
                                  "seed-<s> for each seed's fine-tunes",
                    "baseline": baseline_metrics(seeds[0]).get("dev_after_training")},
        "seeds": seeds,
        "settings": {"supernet_steps": args.supernet_steps, "finetune_steps": args.finetune_steps,
                     "separate_candidates": args.separate, "separate_steps": args.separate_steps,
                     "lr": lrs, "lr_source": "--lr" if args.lr is not None else
                     (str(LR_SWEEP.relative_to(RESULTS.parent.parent)) if lr_sweep else "default (no lr sweep yet)"),
                     "supernet_lr": args.supernet_lr, "batch_size": 32, "torch_threads": 1,
                     "flops_seq_len": MAX_LENGTH, "held_out": f"{len(held_out)} batches of 32 SST-2 "
                     "training phrases outside the subset (seed-1 draw)",
                     "dev_examples": 872 if args.dev_limit is None else len(dev) * 64},
    }
    # The teacher's dev accuracy is the checkpoint's own figure (same dev set, same loader): not
    # re-measured here, to keep the run short on the shared machine.
    log(f"teacher dev accuracy {figures['teacher']['baseline']}")

    # Hand-made L3 student: FLOPs from its configuration, checked with the counter.
    handmade_config = SubnetConfig(3, 384, 12, 1536)
    budget = subnet_flops(handmade_config, MAX_LENGTH)
    handmade, _ = select_layers(teacher, HANDMADE_LAYERS)
    counted = counted_flops(handmade, probe)
    log(f"hand-made L3: {budget:.4g} FLOPs per example at {MAX_LENGTH} tokens (counter {counted:.4g})")

    # AutoDistil: supernets + search under the hand-made student's FLOPs.
    ks = sorted({int(k) for k in args.subspaces.split(",")})  # checked at the start of main
    config = search_config(budget, args.supernet_steps, args.supernet_lr)
    name = f"{NAME}_k{ks[0]}" if len(ks) == 1 else NAME
    prefix = f"autodistil.k{ks[0]}" if len(ks) == 1 else "autodistil"
    with track("autodistil", unit="student") as ad_fp:
        chosen_k, by_k = autodistil_partitions(teacher, train, held_out, config, ks, progress=log)
    result = by_k[chosen_k]
    summary = result.to_dict()
    chosen = result.chosen
    student = result.extract()
    student_counted = counted_flops(student, probe)
    # beside the JSON: a smoke run's plot and table go to results/smoke/ with it
    folder = results_dir_for(smoke_options(args))
    folder.mkdir(parents=True, exist_ok=True)
    plot_candidates(summary, folder / f"{name}_candidates.png")
    (folder / f"{name}_candidates.md").write_text(candidates_markdown(summary))
    log(f"chosen {chosen.config.key}: {chosen.flops:.4g} FLOPs (counter {student_counted:.4g}), "
        f"score {chosen.score:.4f}")
    check_swept_student(lr_sweep, chosen.config.key)

    # Fine-tune both students identically (logit KD, same subset, same steps) from each seed's
    # teacher with that seed; the searched configuration is extracted from the seed-0 supernets.
    students = {"handmade": handmade, "autodistil": student}
    trained: dict[str, Any] = {key: {"per_seed": {}} for key in students}
    for seed in seeds:
        seed_teacher = teacher if seed == seeds[0] else load_baseline(seed)[0]
        tuned = dict(students) if seed == seeds[0] else {
            "handmade": select_layers(seed_teacher, HANDMADE_LAYERS)[0],
            "autodistil": result.extract()}
        for key, model in tuned.items():
            init_acc = None if args.skip_init_eval or seed != seeds[0] else accuracy(model, dev)
            loader = train_loader(tokenizer, batch_size=32, n=args.n, train_seed=seed)
            with track(f"finetune {key}", unit="sample", units=args.finetune_steps * 32) as fp:
                finetune_student(model, seed_teacher, loader, seed=seed, steps=args.finetune_steps, lr=lrs[key])
            trained[key]["per_seed"][str(seed)] = {
                "init_dev_accuracy": init_acc, "dev_accuracy": accuracy(model, dev),
                "params": count_parameters(model), "finetune": fp_figures(fp)}
            log(f"seed {seed} {key}: dev accuracy {init_acc} -> "
                f"{trained[key]['per_seed'][str(seed)]['dev_accuracy']}")
    trained["handmade"].update({"config": handmade_config.key, "teacher_layers": list(HANDMADE_LAYERS),
                                "flops": budget, "flops_counter": counted})
    trained["autodistil"].update({"config": chosen.config.key, "subspace": chosen.subspace,
                                  "flops": chosen.flops, "flops_counter": student_counted,
                                  "score": chosen.score})

    # Separate distillation of a few candidates (smallest, middle, largest FLOPs), then extrapolate
    # to every distinct student any K's search scored.
    union = {c.config.key: c for r in by_k.values() for c in r.candidates}
    ordered = sorted(union.values(), key=lambda c: (c.flops, c.config.key))
    picks = sorted({round(i * (len(ordered) - 1) / max(1, args.separate - 1)) for i in range(args.separate)})
    unlabelled = [{k: v for k, v in b.items() if k != "labels"} for _, b in zip(range(args.separate_steps), train, strict=False)]
    separate = []
    for index in picks:
        cand = ordered[index]
        c = cand.config
        model, _ = build_student(teacher, StudentConfig(num_layers=c.num_layers, hidden_size=c.hidden_size,
                                                        num_heads=c.num_heads, intermediate_size=c.intermediate_size))
        cfg = TrainConfig(epochs=1, max_steps=args.separate_steps, lr=args.supernet_lr, warmup_ratio=0.1,
                          seed=0, quiet=True)
        with track(f"separate {c.key}", unit="step", units=args.separate_steps) as fp:
            distil_task_agnostic(model, teacher, unlabelled, cfg, MiniLM(version=2, relation_heads=12, kd=None))
        separate.append({"student": c.key, "flops": cand.flops, "steps": args.separate_steps,
                         "energy_j_per_step": fp.energy_j / args.separate_steps, **fp_figures(fp)})
        log(f"separate {c.key}: {fp.energy_j / args.separate_steps:.2f} J/step")
    x = np.array([s["flops"] for s in separate])
    y = np.array([s["energy_j_per_step"] for s in separate])
    slope, intercept = np.polyfit(x, y, 1) if len(set(x)) > 1 else (0.0, float(y.mean()))
    per_step = {key: max(float(intercept + slope * c.flops), float(y.min())) for key, c in union.items()}
    separate_total_j = sum(per_step.values()) * args.supernet_steps
    supernet_j = sum(rec.footprint["energy_j"] for r in by_k.values() for rec in r.supernets)
    search_j = sum(r.search_footprint["energy_j"] for r in by_k.values())
    ratio = (supernet_j + search_j) / separate_total_j

    figures["autodistil"] = {
        "window": fp_figures(ad_fp),
        "supernet_energy_j": supernet_j,
        "search_energy_j": search_j,
        "supernets": summary["supernets"],
        "skipped_subspaces": summary["skipped_subspaces"],
        "subspaces": summary["subspaces"],
        "budget_flops": budget,
        "candidates": summary["candidates"],
        "chosen": summary["chosen"],
        "plot": str((folder / f"{name}_candidates.png").relative_to(RESULTS.parent.parent)),
        "chosen_subspace_count": chosen_k,
        "partition_rule": "the sub-space count whose chosen student has the lowest held-out relation loss "
                          "(lowcarb.search.autodistil.choose_partition)",
        "partitions": {str(k): {"chosen": r.chosen.to_dict(), "candidates": len(r.candidates),
                                "skipped_subspaces": list(r.skipped_subspaces),
                                "supernet_energy_j": sum(rec.footprint["energy_j"] for rec in r.supernets),
                                "search_energy_j": r.search_footprint["energy_j"]}
                       for k, r in by_k.items()},
    }
    figures["students"] = trained
    # The issue-18 sweeps behind this run's settings, as they were written.
    figures["sweeps"] = {name: json.loads(path.read_text()) for name, path in
                         (("finetune_lr", LR_SWEEP), ("supernet_steps", STEPS_SWEEP)) if path.exists()}
    figures["separate"] = {
        "measured": separate,
        "fit_energy_j_per_step": {"intercept": float(intercept), "slope_per_flop": float(slope)},
        "extrapolated_to": f"{len(union)} distinct candidates x {args.supernet_steps} steps "
                           "(measured on the students above for --separate-steps steps each, "
                           "linear in FLOPs, scaled to the supernet's step count)",
        "total_energy_j": separate_total_j,
    }
    over = drop_over_seeds([trained["handmade"]["per_seed"][str(s)]["dev_accuracy"] for s in seeds],
                           [trained["autodistil"]["per_seed"][str(s)]["dev_accuracy"] for s in seeds])
    figures["accuracy_over_seeds"] = over
    diff_pt = -over["drop_pt"]  # searched minus hand-made, in points
    claims = [
        claim(f"{prefix}.accuracy_vs_handmade_pt", diff_pt, ">=", 0.0),
        claim(f"{prefix}.search_energy_vs_separate_ratio", round(ratio, 4), "<=", 0.3),
        reported(f"{prefix}.flops_ratio_vs_handmade", round(chosen.flops / budget, 4)),
        reported(f"{prefix}.candidates", len(union)),
    ]
    path = write_results(name, figures, claims, load=load, args=args)
    log(f"wrote {path}")
    for c in claims:
        log(f"{c['id']}: {c['value']} (target {c['target']}, met {c['met']})")


if __name__ == "__main__":
    main()
