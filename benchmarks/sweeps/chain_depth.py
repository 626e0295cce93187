"""Issue-18 sweep: how many layers the compress-all chain's distilled student keeps
(`distill.num_layers` in recipes/compress-all.yaml), chosen on held-out SST-2 training phrases.

    .venv/bin/python benchmarks/sweeps/chain_depth.py [--seeds 0,1] [--depths 3,4,5,6]

The chain (teacher -> KD student -> low rank + recovery -> vocabulary cut -> int8) has three
targets: at least 4.5x faster than the teacher at batch 32, at least 8x smaller, at most 2 points
less accurate. Its student kept 3 of MiniLM's 6 layers since issue 6, where the distillation claim
alone was measured; the chain then ran 7.5x faster and 10x smaller but 2.6 points down, 1.45 of
them from the distillation. The depth was never chosen for the chain. This sweep does, in two steps:

1. Cost, on the first seed's teacher: for each depth in --depths, the chain's structure without any
   training (layer selection, factorization at the recipe's 75 % of encoder parameters, the
   vocabulary cut with the recipe's 4-bit rows, dynamic int8), its size on disk and its batch-32
   latency against the teacher's (1 thread, alternated over --rounds rounds, medians). Training
   changes neither. Depths missing the speed or size target are not trained.
2. Accuracy, for the depths that pass, on each seed: the chain exactly as distill_minilm.py builds
   it (fixed budget: 2 epochs of KD on the 8,000-phrase subset at lr 1e-4, 500 recovery steps),
   scored on HELDOUT_N SST-2 training phrases of >= 6 words outside the subset
   (_sst2.heldout_split; GLUE dev, which scores the claims, is never read). The vocabulary cut
   keeps every token of SST-2's training phrases, held-out ones included, so these scores never
   meet a cut token (GLUE dev does: 2.1 % of its tokens); that is the same for every depth. The
   cost step's untrained chain has no SmoothQuant and was 10 % faster at 3 layers than the
   trained chain distill_minilm.py measured (8.3x against 7.5x the teacher), so its speedups are
   estimates with that margin.

Rule, fixed before the runs: of the depths meeting both cost targets, the one with the highest mean
held-out accuracy; a deeper student must beat a shallower one by more than TOLERANCE_PT points
(5 of 2,000 phrases), else the shallower one is kept. Writes benchmarks/sweeps/chain_depth_sst2.json.
Run alone, like every benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from _common import check_quiet_machine, machine_info, sweep_started  # noqa: E402
from _sst2 import (  # noqa: E402
    MAX_LENGTH,
    SST2_DIR,
    example_batches,
    heldout_split,
    load_baseline,
    train_loader,
)
from distill_minilm import VOCAB_BITS, VOCAB_GROUP_SIZE, VOCAB_KEEP_FIRST, compress_all  # noqa: E402

from lowcarb.compress import lowrank, quantize  # noqa: E402
from lowcarb.compress.distill import LogitKD, TeacherLogits, distill, select_layers, vocab  # noqa: E402
from lowcarb.data import make_loader  # noqa: E402
from lowcarb.train import TrainConfig, benchmark_latency, evaluate, size_on_disk_bytes  # noqa: E402

OUT = HERE / "chain_depth_sst2.json"
HELDOUT_N = 2000
SPEEDUP_TARGET = 4.5
SIZE_TARGET = 8.0
TOLERANCE_PT = 0.25
PARAM_RATIO = 0.75  # the recipe's lowrank.param_ratio
EPOCHS, LR, RECOVER_STEPS = 2, 1e-4, 500  # distill_minilm.py's fixed budget


def choose(mean_accuracy: dict[int, float], feasible: list[int], tolerance_pt: float = TOLERANCE_PT) -> int:
    """The rule fixed before the runs: walking the feasible depths from the shallowest, a deeper
    one replaces the current choice only when its mean held-out accuracy is more than
    `tolerance_pt` points higher."""
    if not feasible:
        raise ValueError("no depth meets both cost targets; nothing to choose from")
    order = sorted(feasible)
    best = order[0]
    for depth in order[1:]:
        # Rounded: accuracies are multiples of 1/2000 averaged over seeds.
        if round((mean_accuracy[depth] - mean_accuracy[best]) * 100 - tolerance_pt, 9) > 0:
            best = depth
    return best


def corpus() -> list[str]:
    return [line.split("\t")[0] for line in (SST2_DIR / "train.tsv").read_text().splitlines()[1:]]


def untrained_chain(teacher: torch.nn.Module, depth: int, tokenizer: Any, texts: list[str]) -> torch.nn.Module:
    """The chain's structure for `depth` layers, no training: what the cost targets depend on."""
    student, _ = select_layers(teacher, num_layers=depth)
    lowrank.apply(student, lowrank.LowRankConfig(param_ratio=PARAM_RATIO, targets=("*encoder*",)))
    vocab.apply(student, vocab.keep_for_texts(texts, tokenizer, bits=VOCAB_BITS, group_size=VOCAB_GROUP_SIZE,
                                              keep_first=VOCAB_KEEP_FIRST))
    return quantize.apply(student, quantize.DynamicInt8()).model


def costs(teacher: torch.nn.Module, tokenizer: Any, depths: list[int], texts: list[str], rounds: int) -> dict[int, Any]:
    _, b32 = example_batches(tokenizer)
    models = {0: teacher, **{d: untrained_chain(teacher, d, tokenizer, texts) for d in depths}}
    lat: dict[int, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for key, model in models.items():
            lat[key].append(benchmark_latency(model, b32, threads=1, warmup=1, repeats=5)["p50_ms"])
    teacher_ms, teacher_bytes = statistics.median(lat[0]), size_on_disk_bytes(teacher)
    out: dict[int, Any] = {}
    for d in depths:
        ms, size = statistics.median(lat[d]), size_on_disk_bytes(models[d])
        out[d] = {"latency_b32_p50_ms": round(ms, 2), "teacher_latency_b32_p50_ms": round(teacher_ms, 2),
                  "speedup_b32": round(teacher_ms / ms, 3), "size_bytes": size,
                  "size_ratio": round(teacher_bytes / size, 3),
                  "feasible": teacher_ms / ms >= SPEEDUP_TARGET and teacher_bytes / size >= SIZE_TARGET}
        print(json.dumps({"depth": d, **out[d]}), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--depths", default="3,4,5,6")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    check_quiet_machine()
    torch.set_num_threads(1)
    started = sweep_started()
    seeds = [int(s) for s in args.seeds.split(",")]
    depths = [int(d) for d in args.depths.split(",")]
    texts = corpus()
    teacher, tokenizer = load_baseline(seeds[0])
    cost = costs(teacher, tokenizer, depths, texts, args.rounds)
    feasible = [d for d in depths if cost[d]["feasible"]]
    heldout = make_loader(heldout_split(HELDOUT_N), 64, tokenizer=tokenizer, max_length=MAX_LENGTH)
    settings = argparse.Namespace(combined_param_ratio=PARAM_RATIO, recover_steps=RECOVER_STEPS, recover_lr=None,
                                  lr=LR, epochs=EPOCHS, max_steps=None, vocab_bits=VOCAB_BITS,
                                  vocab_keep_first=VOCAB_KEEP_FIRST)
    trials = []
    for seed in seeds:
        teacher, tokenizer = load_baseline(seed)
        train = train_loader(tokenizer, batch_size=32, train_seed=seed)
        teacher_acc = evaluate(teacher, heldout, quiet=True)["accuracy"]
        for depth in feasible:
            t0 = time.perf_counter()
            student, chosen_layers = select_layers(teacher, num_layers=depth)
            cache = TeacherLogits(teacher)
            config = TrainConfig(epochs=EPOCHS, max_steps=EPOCHS * len(train), batch_size=32, lr=LR,
                                 warmup_ratio=0.1, seed=seed, quiet=True)
            distill(student, teacher, train, None, LogitKD(temperature=2.0, alpha=0.5), config, teacher_logits=cache)
            student_acc = evaluate(student, heldout, quiet=True)["accuracy"]
            chain = compress_all(teacher, student, tokenizer, train, heldout, settings, cache, seed)
            trials.append({"seed": seed, "depth": depth, "teacher_layers": list(chosen_layers.teacher_layers),
                           "teacher_heldout_accuracy": teacher_acc, "student_heldout_accuracy": student_acc,
                           "after_recover_heldout_accuracy": chain["after_recover_accuracy"],
                           "chain_heldout_accuracy": chain["dev_accuracy"],
                           "wall_s": round(time.perf_counter() - t0, 1)})
            print(json.dumps(trials[-1]), flush=True)

    def mean(depth: int) -> float:
        return statistics.mean(t["chain_heldout_accuracy"] for t in trials if t["depth"] == depth)

    mean_accuracy = {d: mean(d) for d in feasible}
    chosen = choose(mean_accuracy, feasible)
    table = {"table": "chain_depth_sst2", "command": " ".join(sys.argv), "machine": machine_info(),
             "started": started, "load_after": os.getloadavg()[0], "costs": cost, "trials": trials,
             "mean_chain_heldout_accuracy": mean_accuracy,
             "decision": {"setting": "compress-all recipe: distill.num_layers (distill_minilm.py's chain student)",
                          "chosen": chosen,
                          "rule": f"of the depths whose untrained chain is >= {SPEEDUP_TARGET}x faster and >= "
                                  f"{SIZE_TARGET}x smaller than the teacher, the highest mean held-out accuracy; "
                                  f"a deeper one must be more than {TOLERANCE_PT} points better"}}
    OUT.write_text(json.dumps(table, indent=1) + "\n")
    print(f"chosen depth {chosen}; wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
