"""muP vs the standard parametrization: does the best learning rate stay put as the model widens?

    .venv/bin/python benchmarks/mup_transfer.py            # ~10 min of CPU time, 1 thread

A character-level decoder LM (2 pre-LN blocks, 4 heads whose size grows with width, MLP ratio 4,
context 32) trained on the SST-2 training phrases (the shared fixed-seed 8,000-phrase subset of
`_sst2.py`, joined by newlines) and evaluated on the 872 dev sentences (256 fixed windows), at
widths 32, 64, 128, 256 (8x), over a log2 learning-rate grid, AdamW, same steps, batches and seed
for every run, muP and SP side by side. Base width 32 (muP == SP there up to the zero-initialised
readout and query). Every run is its own ledger window (lowcarb.measure.track: CPU-time x power
estimate + resident-memory estimate on this machine, which has no readable RAPL).

Run order alternates: for each learning rate, each width, muP then SP, so the proxy and target
trials see the same background load. Finished trials are cached in
benchmarks/.cache/mup_transfer_trials.json so an interrupted run resumes (delete it to start over).

muTransfer is read off the same grid: the proxy sweep is the muP width-32 row, the direct sweep the
muP width-256 row (both measured), the transferred run the width-256 trial at the proxy's best lr
(same seed, deterministic: it is that run). Only the learning rate is swept here; the output
multiplier and init scale stay 1 (the library and `lowcarb mutransfer` sweep them too).

Claims: mup.lr_shift_octaves <= 1, sp.lr_shift_octaves (reported), mup.wider_is_better,
mutransfer.loss_gap_pct <= 1.0, mutransfer.tuning_energy_ratio <= 0.15.
Plot: benchmarks/results/mup_lr_sweep.png (val loss against log2 lr, one line per width).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import claim, reported, write_results  # noqa: E402
from _sst2 import load_dev, load_subset, subset_description  # noqa: E402

from lowcarb.search.mup import MupModelConfig, build_model  # noqa: E402
from lowcarb.search.mup.charlm import LMTrainConfig, build_corpus, train_lm  # noqa: E402
from lowcarb.search.mup.mutransfer import HyperParams, run_trial  # noqa: E402

THREADS = 1
WIDTHS = (32, 64, 128, 256)
LOG2_LRS = (-10.0, -9.0, -8.0, -7.0, -6.0, -5.0, -4.0)
PARAMS = ("mup", "sp")
SEED = 0
N_TRAIN = 8000
MODEL = MupModelConfig(kind="lm", width=32, base_width=32, depth=2, n_heads=4, max_len=64)
TRAIN = LMTrainConfig(steps=200, batch_size=16, seq_len=32, warmup_frac=0.1, eval_windows=256)
CACHE = Path(__file__).resolve().parent / ".cache" / "mup_transfer_trials.json"
PLOT = Path(__file__).resolve().parent / "results" / "mup_lr_sweep.png"


def _key(p: str, w: int, lr: float) -> str:
    return f"{p}|{w}|{lr:g}"


def _settings() -> dict:
    return {
        "model": MODEL.to_dict(),
        "train": asdict(TRAIN),
        "seed": SEED,
        "n_train": N_TRAIN,
        "threads": THREADS,
    }


def run_grid(corpus) -> dict[str, dict]:
    cache: dict = {}
    if CACHE.exists():
        cache = json.loads(CACHE.read_text())
        if cache.get("settings") != json.loads(json.dumps(_settings())):
            cache = {}  # different settings: the cached trials do not apply
    trials = cache.setdefault("trials", {})
    cache["settings"] = _settings()
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    total = len(WIDTHS) * len(LOG2_LRS) * len(PARAMS)
    for lr in LOG2_LRS:
        for w in WIDTHS:
            for p in PARAMS:
                k = _key(p, w, lr)
                if k in trials:
                    continue
                t = run_trial(
                    "grid",
                    replace(MODEL, parametrization=p),
                    w,
                    HyperParams(lr),
                    corpus,
                    TRAIN,
                    (SEED,),
                )
                trials[k] = {
                    "val_loss": t.val_loss,
                    "energy_j": t.energy_j,
                    "cpu_time_s": t.cpu_time_s,
                    "duration_s": t.duration_s,
                    "energy_method": t.energy_method,
                }
                CACHE.write_text(json.dumps(cache, indent=1))
                loss = "diverged" if t.val_loss is None else f"{t.val_loss:.4f}"
                print(
                    f"[{len(trials)}/{total}] {p:<3} w={w:<4} lr=2^{lr:g}  val {loss}  "
                    f"{t.energy_j:6.1f} J  cpu {t.cpu_time_s:5.1f} s  wall {t.duration_s:5.1f} s",
                    flush=True,
                )
    return trials


# Ablation (reported, no claim): the same muP LM with a scaled instead of zero-initialised readout
# (N(0, 1/fan_in), output still x base_width/width; the issue allows either), query still zero.
ABLATION_WIDTHS = (32, 256)
ABLATION_LRS = (-7.0, -6.0, -5.0, -4.0)
ABLATION_MODEL = replace(MODEL, parametrization="mup", readout_zero_init=False)


def run_ablation(corpus) -> dict[str, dict]:
    cache = json.loads(CACHE.read_text())
    rows = cache.setdefault("ablation_scaled_readout", {})
    for lr in ABLATION_LRS:
        for w in ABLATION_WIDTHS:
            k = _key("mup-scaled-readout", w, lr)
            if k in rows:
                continue
            t = run_trial("ablation", ABLATION_MODEL, w, HyperParams(lr), corpus, TRAIN, (SEED,))
            rows[k] = {
                "val_loss": t.val_loss,
                "energy_j": t.energy_j,
                "cpu_time_s": t.cpu_time_s,
                "duration_s": t.duration_s,
            }
            CACHE.write_text(json.dumps(cache, indent=1))
            print(f"[ablation] w={w:<4} lr=2^{lr:g}  val {t.val_loss}", flush=True)
    return rows


def best_log2_lr(trials: dict, p: str, w: int) -> float | None:
    losses = {lr: trials[_key(p, w, lr)]["val_loss"] for lr in LOG2_LRS}
    ok = {lr: v for lr, v in losses.items() if v is not None}
    return min(ok, key=ok.get) if ok else None


def plot(trials: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, p in zip(axes, ("sp", "mup"), strict=True):
        for i, w in enumerate(WIDTHS):
            pts = [(lr, trials[_key(p, w, lr)]["val_loss"]) for lr in LOG2_LRS]
            pts = [(lr, v) for lr, v in pts if v is not None]
            ax.plot(
                [a for a, _ in pts],
                [b for _, b in pts],
                marker="o",
                color=cmap(i / (len(WIDTHS) - 1)),
                label=f"width {w}",
            )
            best = best_log2_lr(trials, p, w)
            if best is not None:
                ax.plot(
                    [best],
                    [trials[_key(p, w, best)]["val_loss"]],
                    marker="*",
                    ms=14,
                    color=cmap(i / (len(WIDTHS) - 1)),
                )
        ax.set_title("standard parametrization" if p == "sp" else "muP")
        ax.set_xlabel("log2 learning rate (AdamW)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss (nats / char)")
    all_losses = [t["val_loss"] for t in trials.values() if t["val_loss"] is not None]
    lo = min(all_losses)
    axes[0].set_ylim(lo - 0.05, min(max(all_losses), lo + 1.0))
    axes[1].legend()
    fig.suptitle(f"char-level LM on SST-2 phrases, {TRAIN.steps} steps: best lr per width (stars)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    torch.set_num_threads(THREADS)
    t0, c0 = time.time(), time.process_time()
    train_texts = list(load_subset(N_TRAIN, SEED).texts)
    corpus = build_corpus(train_texts, list(load_dev().texts))
    # Warm-up (not recorded): the first training in a process pays one-time costs (lazy kernel
    # set-up, allocator growth) that would otherwise land on the first, narrowest trial.
    torch.manual_seed(SEED)
    warm = build_model(replace(MODEL, vocab_size=corpus.vocab_size))
    train_lm(warm, corpus, replace(TRAIN, steps=20, eval_windows=16))
    trials = run_grid(corpus)
    ablation = run_ablation(corpus)

    best = {p: {w: best_log2_lr(trials, p, w) for w in WIDTHS} for p in PARAMS}
    narrow, wide = WIDTHS[0], WIDTHS[-1]

    def shift(p: str) -> float | None:
        a, b = best[p][narrow], best[p][wide]
        return None if a is None or b is None else abs(b - a)

    transferred = best["mup"][narrow]
    at_transfer = {w: trials[_key("mup", w, transferred)]["val_loss"] for w in WIDTHS}
    losses = [at_transfer[w] for w in WIDTHS]
    wider_is_better = all(v is not None for v in losses) and all(
        b < a for a, b in zip(losses, losses[1:], strict=False)
    )
    target_losses = [trials[_key("mup", wide, lr)]["val_loss"] for lr in LOG2_LRS]
    best_target = min(v for v in target_losses if v is not None)
    transfer_loss = at_transfer[wide]
    gap_pct = None if transfer_loss is None else 100.0 * (transfer_loss - best_target) / best_target
    proxy_j = sum(trials[_key("mup", narrow, lr)]["energy_j"] for lr in LOG2_LRS)
    direct_j = sum(trials[_key("mup", wide, lr)]["energy_j"] for lr in LOG2_LRS)
    proxy_cpu = sum(trials[_key("mup", narrow, lr)]["cpu_time_s"] for lr in LOG2_LRS)
    direct_cpu = sum(trials[_key("mup", wide, lr)]["cpu_time_s"] for lr in LOG2_LRS)

    plot(trials, PLOT)
    figures = {
        "setup": {
            "widths": list(WIDTHS),
            "log2_lrs": list(LOG2_LRS),
            "seeds": [SEED],
            "threads": THREADS,
            "optimizer": "adamw",
            "model": MODEL.to_dict(),
            "train": asdict(TRAIN),
            "data": subset_description(N_TRAIN, SEED),
            "text": "char-level: train subset phrases joined by newlines; val = dev sentences",
            "vocab_size": corpus.vocab_size,
            "train_chars": len(corpus.train),
            "val_chars": len(corpus.val),
            "depth_scaling": MODEL.depth_scaling,
            "tuned": "learning rate only (output multiplier and init scale fixed at 1)",
            "concurrency": "shared 2-core machine; other engineers' jobs ran concurrently",
        },
        "best_log2_lr": {p: {str(w): best[p][w] for w in WIDTHS} for p in PARAMS},
        "mup_val_loss_at_transferred_lr": {str(w): at_transfer[w] for w in WIDTHS},
        "transferred_log2_lr": transferred,
        "transfer_val_loss": transfer_loss,
        "best_direct_target_val_loss": best_target,
        "best_direct_target_log2_lr": best["mup"][wide],
        "proxy_sweep_energy_j": proxy_j,
        "direct_target_sweep_energy_j": direct_j,
        "direct_sweep_basis": f"measured: {len(LOG2_LRS)} trials at width {wide}",
        "proxy_sweep_cpu_s": proxy_cpu,
        "direct_target_sweep_cpu_s": direct_cpu,
        "tuning_cpu_time_ratio": proxy_cpu / direct_cpu,
        "energy_method": trials[_key("mup", wide, LOG2_LRS[0])]["energy_method"],
        "trials": trials,
        "trials_provenance": (
            "each trial is measured once and kept in benchmarks/.cache/mup_transfer_trials.json; "
            "an invocation reuses trials from earlier invocations with identical settings (this "
            "file's grid ran 05:42-06:09 UTC, the ablation 06:14-06:19 UTC); delete the cache "
            "to repeat them"
        ),
        "ablation_scaled_readout": {
            "what": "muP with readout N(0, 1/fan_in) instead of zero init (query still zero)",
            "val_loss": {
                str(w): {
                    f"{lr:g}": ablation[_key("mup-scaled-readout", w, lr)]["val_loss"]
                    for lr in ABLATION_LRS
                }
                for w in ABLATION_WIDTHS
            },
            "best_log2_lr": {
                str(w): min(
                    (
                        lr
                        for lr in ABLATION_LRS
                        if ablation[_key("mup-scaled-readout", w, lr)]["val_loss"] is not None
                    ),
                    key=lambda lr, w=w: ablation[_key("mup-scaled-readout", w, lr)]["val_loss"],
                )
                for w in ABLATION_WIDTHS
            },
            "best_val_loss_widest": min(
                v["val_loss"]
                for k, v in ablation.items()
                if k.split("|")[1] == str(wide) and v["val_loss"] is not None
            ),
            "sp_best_val_loss_widest": min(
                trials[_key("sp", wide, lr)]["val_loss"]
                for lr in LOG2_LRS
                if trials[_key("sp", wide, lr)]["val_loss"] is not None
            ),
            "mup_zero_readout_best_val_loss_widest": best_target,
        },
        "benchmark_wall_s_this_invocation": time.time() - t0,
        "benchmark_cpu_s_this_invocation": time.process_time() - c0,
        "grid_cpu_s_total": sum(t["cpu_time_s"] for t in trials.values()),
        "grid_wall_s_total": sum(t["duration_s"] for t in trials.values()),
        "plot": str(PLOT.relative_to(Path(__file__).resolve().parent.parent)),
    }
    shift_mup = shift("mup")
    claims = [
        claim("mup.lr_shift_octaves", shift_mup, "<=", 1),
        reported("sp.lr_shift_octaves", shift("sp")),
        claim("mup.wider_is_better", wider_is_better, "==", True),
        claim("mutransfer.loss_gap_pct", None if gap_pct is None else round(gap_pct, 3), "<=", 1.0),
        claim("mutransfer.tuning_energy_ratio", round(proxy_j / direct_j, 4), "<=", 0.15),
    ]
    path = write_results(
        "mup_transfer", figures, claims, command=".venv/bin/python benchmarks/mup_transfer.py"
    )
    for c in claims:
        print(f"{c['id']:<34} {c['value']!s:<10} target {c['target']!s:<8} met {c['met']}")
    print(f"best log2 lr per width: {figures['best_log2_lr']}")
    print(f"results: {path}\nplot: {PLOT}")


if __name__ == "__main__":
    main()
