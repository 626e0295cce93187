"""EarlyBERT on MiniLM / SST-2: early-bird search + training of the pruned network, against full
fine-tuning (issue 5).

Claims:
- earlybert.energy_ratio            <= 0.75  (search + pruned training) / full fine-tune energy
- earlybert.accuracy_drop_pt        <= 1.5   full fine-tune dev accuracy - pruned, in points
- earlybert.stop_fraction_of_epoch  <= 0.3   where the automatic early-bird stop fired
- earlybert.pruned_speedup_b32      >= 1.3   unpruned / pruned latency at batch 32

Run:    .venv/bin/python benchmarks/earlybert_minilm.py          (about 15 min on 2 cores)
Needs:  benchmarks/.cache/minilm-sst2/ from benchmarks/baseline_minilm_sst2.py: the full
        fine-tune (dev accuracy and training energy) on the same subset, epochs, seed, batch size
        and threads; the script checks the cached settings match its own and says so.

What runs, in one process with --threads torch threads (default: the baseline's; latency: 1
thread):
1. search: pretrained MiniLM + fresh classifier (as the baseline), coefficients per head and FFN
   neuron, L1 1e-4, a mask every 5 steps (1 % of the 500-step training: You et al. drew one per
   epoch of 160), automatic stop (5 masks within 0.1), ledger window 1;
2. the ticket applied to the pretrained weights (heads and neurons physically removed), trained
   like the baseline (same epochs, lr, batches), ledger window 2; dev accuracy;
3. side by side, alternated: short windows of full fine-tune steps, search steps and pruned steps
   give energy per step for each; the energy claim is
       (search steps x J/search step + pruned steps x J/pruned step) / (full steps x J/full step)
   with the step counts of the real runs (full: the baseline's). The ratio of the two real windows
   to the cached full fine-tune's window is reported too (measured at another time);
4. latency at batch 32, unpruned vs pruned, alternated rounds, medians.
"""

from __future__ import annotations

import argparse
import copy
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
from _common import claim, median, reported, write_results  # noqa: E402
from _sst2 import (  # noqa: E402
    baseline_metrics,
    dev_loader,
    example_batches,
    sst2_bundle,
    train_loader,
)

from lowcarb.measure import track  # noqa: E402
from lowcarb.models import ModelConfig, build_model  # noqa: E402
from lowcarb.prune import bert_structure, earlybird  # noqa: E402
from lowcarb.prune.earlybird import EarlyBirdConfig  # noqa: E402
from lowcarb.train import TrainConfig, benchmark_latency, evaluate, fit  # noqa: E402

NAME = "earlybert_minilm"


def heartbeat(label: str, every: int = 50):
    t0 = time.perf_counter()

    def on_step(step: int, _m: torch.nn.Module) -> bool:
        if step % every == 0:
            print(f"{label} step {step}  {time.perf_counter() - t0:.0f} s", flush=True)
        return False

    return on_step


def energy_per_step(model: torch.nn.Module, loader: Any, batch: int, steps: int, lr: float,
                    extra_loss: Any = None) -> float:
    """J per training step over `steps` steps (after 2 untimed ones), in a ledger window."""
    config = TrainConfig(epochs=1, batch_size=batch, lr=lr, quiet=True)
    fit(model, loader, None, config, extra_loss=extra_loss, on_step=lambda s, _m: s >= 2)
    with track("step-energy") as fp:
        fit(model, loader, None, config, extra_loss=extra_loss, on_step=lambda s, _m: s >= steps)
    return fp.energy_j / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="subset size (default: the baseline's)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the baseline's")
    parser.add_argument("--lr", type=float, default=None, help="default: the baseline's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the baseline's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="default: the baseline's")
    parser.add_argument("--mask-every", type=int, default=5,
                        help="steps between masks (default 5: 1 %% of the baseline's 500 steps)")
    parser.add_argument("--max-search-steps", type=int, default=None,
                        help="default: half an epoch of the subset")
    parser.add_argument("--energy-steps", type=int, default=10, help="steps per energy window")
    parser.add_argument("--rounds", type=int, default=3, help="alternated energy/latency rounds")
    args = parser.parse_args()
    base = baseline_metrics()
    if args.threads is None:
        args.threads = int(base.get("torch_threads") or 1)
    torch.set_num_threads(args.threads)
    tc = base["train_config"]
    n = args.n or base["subset"]["n"]
    epochs = args.epochs or tc["epochs"]
    lr = args.lr or tc["lr"]
    batch = args.batch_size or tc["batch_size"]
    same = (n == base["subset"]["n"] and epochs == tc["epochs"] and lr == tc["lr"]
            and batch == tc["batch_size"] and args.seed == tc["seed"]
            and args.threads == base.get("torch_threads"))
    bundle = sst2_bundle(n, args.seed)
    handle = build_model(ModelConfig(name="minilm"), bundle, seed=args.seed)
    pretrained, tok = handle.model, handle.tokenizer
    loader = train_loader(tok, batch, n, args.seed)
    steps_per_epoch = len(loader)
    cfg = EarlyBirdConfig(head_prune_ratio=1 / 3, ffn_prune_ratio=0.4, l1_coef=1e-4,
                          mask_every_steps=args.mask_every, distance_threshold=0.1, window=5,
                          # A short search is EarlyBERT's point: bounded at half an epoch.
                          max_search_steps=args.max_search_steps or -(-steps_per_epoch // 2))
    train_cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, warmup_ratio=0.1,
                            weight_decay=0.01, grad_clip_norm=1.0, seed=args.seed, quiet=True)

    # 1. search (on a copy inside search(); `pretrained` keeps its weights)
    with track("earlybird-search") as search_fp:
        ticket = earlybird.search(pretrained, loader, cfg, train_cfg)
    print(f"search stopped at step {ticket.stop_step} ({ticket.stop_fraction_of_epoch:.3f} epoch),"
          f" early={ticket.stopped_early}", flush=True)

    # 2. prune the pretrained weights, train like the baseline
    unpruned = copy.deepcopy(pretrained)  # latency reference: same architecture, unpruned
    pruned = pretrained
    summary = earlybird.apply(pruned, ticket)
    with track("earlybird-train", unit="sample", units=n * epochs) as train_fp:
        result = fit(pruned, loader, None, train_cfg, on_step=heartbeat("pruned"))
    dev = evaluate(pruned, dev_loader(tok, 64), quiet=True)
    print(f"pruned dev accuracy {dev['accuracy']:.4f} (full fine-tune {base['dev_after_training']['accuracy']:.4f})",
          flush=True)

    # 3. energy per step, side by side, alternated
    energy: dict[str, list[float]] = {"full": [], "search": [], "pruned": []}
    short_lr = lr
    for _ in range(args.rounds):
        full_model = copy.deepcopy(unpruned).train()
        energy["full"].append(energy_per_step(full_model, loader, batch, args.energy_steps, short_lr))
        del full_model
        search_model = copy.deepcopy(unpruned).train()
        coefs = bert_structure.attach(search_model)
        energy["search"].append(energy_per_step(
            search_model, loader, batch, args.energy_steps, short_lr,
            extra_loss=lambda _m, c=coefs: cfg.l1_coef * c.l1()))
        del search_model
        pruned_copy = copy.deepcopy(pruned).train()
        energy["pruned"].append(energy_per_step(pruned_copy, loader, batch, args.energy_steps, short_lr))
        del pruned_copy
    j = {k: median(v) for k, v in energy.items()}
    full_steps = epochs * steps_per_epoch
    ratio = (ticket.stop_step * j["search"] + result.steps * j["pruned"]) / (full_steps * j["full"])

    # 4. latency at batch 32
    _, b32 = example_batches(tok)
    lat: dict[str, list[float]] = {"unpruned": [], "pruned": []}
    for _ in range(max(args.rounds, 5)):
        lat["unpruned"].append(benchmark_latency(unpruned, b32, threads=1, repeats=5)["p50_ms"])
        lat["pruned"].append(benchmark_latency(pruned, b32, threads=1, repeats=5)["p50_ms"])
    speedup = median(lat["unpruned"]) / median(lat["pruned"])

    full_acc = base["dev_after_training"]["accuracy"]
    drop = (full_acc - dev["accuracy"]) * 100
    cached_full_j = base.get("train_energy_j")
    figures: dict[str, Any] = {
        "note": "2-core shared machine; other engineers' work ran concurrently (absolute times "
                "are noisy; claims are ratios)",
        "config": {"n": n, "epochs": epochs, "lr": lr, "batch_size": batch, "seed": args.seed,
                   "threads_training": args.threads, "threads_latency": 1,
                   "earlybird": ticket.config, "steps_per_epoch": steps_per_epoch},
        "full_fine_tune_reference": {
            "source": "benchmarks/.cache/minilm-sst2/metrics.json (baseline_minilm_sst2.py)",
            "dev_accuracy": full_acc, "train_energy_j": cached_full_j,
            "train_seconds": base.get("train_seconds"), "train_config": tc,
            "subset": base["subset"], "torch_threads": base.get("torch_threads"),
            "same_subset_epochs_lr_batch_seed_threads": same},
        "ticket": ticket.to_dict(),
        "prune_summary": {k: v for k, v in summary.to_dict().items() if k != "config"},
        "search_window": {"energy_j": search_fp.energy_j, "duration_s": search_fp.duration_s,
                          "total_g": search_fp.total_g, "steps": ticket.stop_step},
        "train_window": {"energy_j": train_fp.energy_j, "duration_s": train_fp.duration_s,
                         "total_g": train_fp.total_g, "steps": result.steps,
                         "methods": {k: c.method for k, c in train_fp.components.items()}},
        "dev_pruned": dev,
        "energy_per_step_j": j,
        "energy_per_step_rounds_j": energy,
        "energy_ratio_inputs": {"search_steps": ticket.stop_step, "pruned_steps": result.steps,
                                "full_steps": full_steps},
        "latency_b32_ms": {k: median(v) for k, v in lat.items()},
        "latency_b32_rounds_ms": lat,
    }
    if cached_full_j:
        figures["energy_ratio_vs_cached_full_window"] = (
            (search_fp.energy_j + train_fp.energy_j) / cached_full_j)
    claims = [
        claim("earlybert.energy_ratio", round(ratio, 4), "<=", 0.75),
        claim("earlybert.accuracy_drop_pt", round(drop, 2) if same else None, "<=", 1.5),
        claim("earlybert.stop_fraction_of_epoch",
              round(ticket.stop_fraction_of_epoch, 4) if ticket.stopped_early else None,
              "<=", 0.3),
        claim("earlybert.pruned_speedup_b32", round(speedup, 4), ">=", 1.3),
        reported("earlybert.stop_step", ticket.stop_step),
        reported("earlybert.params_ratio", round(summary.params_after / summary.params_before, 4)),
    ]
    path = write_results(NAME, figures, claims)
    print(json.dumps(claims, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
