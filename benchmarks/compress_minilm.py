"""Serving efficiency on the fine-tuned MiniLM / SST-2 dev baseline: int8 quantization and low-rank
factorization, each against the fp32 model, side by side in one run (issue 4).

Claims (issue 18: accuracy drops are mean(fp32) - mean(compressed) over the baselines of the
training seeds --seeds, default 0,1,2, with their spread; latency on the first seed's models):
- quantize.int8_speedup_b32       >= 2.5  fp32 / int8 latency, batch 32, SST-2 dev batches
- quantize.int8_accuracy_drop_pt  <= 1.0  fp32 - int8 dev accuracy, points
- quantize.int8_linear_size_ratio >= 3.5  fp32 / int8 bytes of the Linear weights (scales included)
- lowrank.speedup_b32             >= 1.4  fp32 / factorized latency at 50 % of the encoder's
                                          Linear weight parameters kept
- lowrank.accuracy_drop_pt        <= 1.5  after spectral init + Frobenius decay + recovery
- lowrank_quantize.speedup_b32    (reported) factorized then int8, against fp32
Also reported, same run: plain truncated SVD without recovery and recovery with ordinary weight
decay (so the gains of spectral init and of Frobenius decay show), per-tensor int8 accuracy and
the x86 engine's int8 latency (why quantize.py picks per-channel scales and oneDNN), our
weight-only int8, torchao's eager int8 when torchao is importable, and onnxruntime fp32 / int8
latency of the exported baseline (when the onnx extra is installed).

Run:    .venv/bin/python benchmarks/compress_minilm.py          (alone: refuses above load 1.5)
Needs:  benchmarks/.cache/minilm-sst2/seed-<s>/ from benchmarks/baseline_minilm_sst2.py.
Smoke:  .venv/bin/python benchmarks/compress_minilm.py --quick  (tiny settings, JSON in results/smoke/)

Threads: every latency is measured at 1 torch thread (and 1 onnxruntime thread), models
alternated in each round, median over rounds of the time of one pass over the same fixed SST-2 dev
batches of 32. The two recovery fine-tunes run at --train-threads (1) on the baseline's
fixed-seed 8,000-phrase subset for --recover-epochs (as the compress-minilm recipe; --recover-steps
caps them), with logit KD from the fp32 model (--recover-loss kd, T = 2, half hard labels) or labels
only (ce), at the recipe's lr and Frobenius decay (chosen by the issue-18 recovery sweep on
held-out SST-2 train; see the results' `sweeps`). The weight-decay recovery (the comparison that
shows Frobenius decay's gain) runs on the first seed only. The int8 claims are for lowcarb's dynamic int8 with SmoothQuant smoothing, its strength
chosen on training batches (never dev); plain dynamic int8 is reported beside it. The machine is
shared: other work may run during the run; ratios are what compare.
"""

from __future__ import annotations

import argparse
import copy
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
from _common import (  # noqa: E402
    add_load_arguments,
    check_quiet_machine_for,
    claim,
    drop_over_seeds,
    median,
    parse_seeds,
    reported,
    write_results,
)

NAME = "compress_minilm"
SWEEPS = Path(__file__).resolve().parent / "sweeps" / "lowrank_sst2.json"
# The compress-minilm recipe's recovery (issue-18 sweep).
RECOVER_EPOCHS, RECOVER_LR, RECOVER_LOSS, FROBENIUS_DECAY = 2, 1e-4, "kd", 1e-4


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--param-ratio", type=float, default=0.5)
    p.add_argument(
        "--n", type=int, default=8000, help="training subset for the recovery fine-tunes"
    )
    p.add_argument("--recover-epochs", type=int, default=RECOVER_EPOCHS, help="recovery epochs")
    p.add_argument("--recover-steps", type=int, default=None, help="cap on recovery steps")
    p.add_argument(
        "--recover-loss", choices=["kd", "ce"], default=RECOVER_LOSS,
        help="recovery objective: logit KD from the fp32 model (T=2, half hard labels) or labels",
    )  # fmt: skip
    p.add_argument("--lr", type=float, default=RECOVER_LR, help="recovery learning rate")
    p.add_argument("--frobenius-decay", type=float, default=FROBENIUS_DECAY)
    p.add_argument("--seeds", default="0,1,2", help="training seeds of the baselines compressed")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--train-threads", type=int, default=1)
    p.add_argument("--latency-rounds", type=int, default=7)
    p.add_argument(
        "--latency-batches", type=int, default=4, help="dev batches of 32 per timed pass"
    )
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument(
        "--quick", action="store_true", help="smoke test: tiny settings, JSON in results/smoke/"
    )
    add_load_arguments(p)
    args = p.parse_args()
    if args.quick:
        args.n, args.recover_steps, args.latency_rounds, args.latency_batches = 256, 3, 2, 1
        args.no_onnx = True
    return args


def accuracy(model: torch.nn.Module, loader: Any) -> float:
    from lowcarb.train import evaluate

    with torch.inference_mode():
        return float(evaluate(model, loader, quiet=True)["accuracy"])


def recover(
    model: torch.nn.Module, tok: Any, args: argparse.Namespace, decay: str, teacher: Any, seed: int
) -> dict[str, Any]:
    """The recovery fine-tune, inside a ledger window (teacher passes included)."""
    from _sst2 import train_loader

    from lowcarb.compress import lowrank
    from lowcarb.compress.distill import LogitKD, TeacherLogits, distill
    from lowcarb.measure import track
    from lowcarb.train import TrainConfig, default_param_groups, fit, torch_threads

    config = TrainConfig(
        epochs=args.recover_epochs, max_steps=args.recover_steps, batch_size=32, lr=args.lr,
        weight_decay=args.weight_decay, warmup_ratio=0.1, seed=seed, quiet=True,
    )  # fmt: skip
    if decay == "frobenius":
        groups = lowrank.param_groups(model, args.weight_decay)
        extra = lowrank.frobenius_decay_loss(args.frobenius_decay)
    else:
        groups, extra = default_param_groups(model, args.weight_decay), None
    model.train()
    loader = train_loader(tok, 32, n=args.n, train_seed=seed)
    with torch_threads(args.train_threads), track(f"recover ({decay})", unit="step") as fp:
        if args.recover_loss == "kd":
            summary = distill(
                model, teacher, loader, None, LogitKD(temperature=2.0, alpha=0.5), config,
                teacher_logits=TeacherLogits(teacher), extra_loss=extra, param_groups=groups,
            )  # fmt: skip
            steps, loss = summary.steps, summary.stages[-1].get("train_loss")
        else:
            result = fit(model, loader, None, config, extra_loss=extra, param_groups=groups)
            steps, loss = result.steps, result.train_loss
        fp.units = steps
    model.eval()
    return {
        "steps": steps,
        "loss": args.recover_loss,
        "train_loss": loss,
        "duration_s": fp.duration_s,
        "energy_j": fp.energy_j,
        "co2_g": fp.total_g,
        "energy_method": "; ".join(f"{k}: {c.method}" for k, c in fp.components.items()),
    }


_T0 = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr (the run takes a while on a shared machine)."""
    print(f"[{time.perf_counter() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


def time_pass(run: Any, batches: list[dict[str, torch.Tensor]]) -> float:
    """Milliseconds for one pass over the batches."""
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            run(batch)
    return (time.perf_counter() - start) * 1000.0


def int8_arms(base: torch.nn.Module, tok: Any, dev: Any, args: argparse.Namespace, seed: int,
              first: bool) -> dict[str, Any]:
    """int8 variants of one baseline: accuracies, and (first seed) the models and figures."""
    from _sst2 import train_loader

    from lowcarb.compress import quantize
    from lowcarb.compress.quantize import DynamicInt8, WeightOnlyInt8

    acc: dict[str, float] = {}
    models: dict[str, torch.nn.Module] = {}
    engines: dict[str, str | None] = {}
    figures: dict[str, Any] = {}
    q = copy.deepcopy(base)
    qs = quantize.apply(q, DynamicInt8())
    models["int8"], engines["int8"] = q, qs["backend"]
    acc["int8"] = accuracy(q, dev)
    figures["int8"] = qs.to_dict() | {"modules_changed": len(qs.modules_changed)}
    # SmoothQuant: the strength chosen on training batches (never on dev) by how close the int8
    # logits stay to fp32; calibration and held-out batches are disjoint.
    calib_all = [b for _, b in zip(range(24), train_loader(tok, 32, n=args.n, train_seed=seed), strict=False)]
    calib, held = calib_all[:16], calib_all[16:]
    base.eval()
    alpha, alpha_errors = quantize.choose_smooth_alpha(base, DynamicInt8(), calib, held)
    figures["smooth_alpha"] = {"chosen": alpha, "logit_mse_on_held_out_train_batches": alpha_errors,
                               "calibration_batches": len(calib), "held_out_batches": len(held)}
    qsm = copy.deepcopy(base)
    qss = quantize.apply(qsm, DynamicInt8(smooth_alpha=alpha),
                         calibration=calib if alpha is not None else None)
    models["int8_smooth"], engines["int8_smooth"] = qss.model, qss["backend"]
    acc["int8_smooth"] = accuracy(qss.model, dev)
    figures["int8_smooth"] = qss.to_dict() | {"modules_changed": len(qss.modules_changed)}
    figures["int8_linear_size_ratio"] = qss["linear_size_ratio"]
    log(f"seed {seed}: int8 evaluated (smoothing alpha {alpha})")
    if not first:
        return {"acc": acc, "figures": figures}
    q_pt = copy.deepcopy(base)
    quantize.apply(q_pt, DynamicInt8(per_channel=False))
    acc["int8_per_tensor"] = accuracy(q_pt, dev)
    del q_pt
    if qs["backend"] != "x86" and "x86" in torch.backends.quantized.supported_engines:
        qx = copy.deepcopy(base)
        quantize.apply(qx, DynamicInt8(backend="x86"))
        models["int8_x86_engine"], engines["int8_x86_engine"] = qx, "x86"
    wo = copy.deepcopy(base)
    wos = quantize.apply(wo, WeightOnlyInt8())
    models["int8_weight_only"], engines["int8_weight_only"] = wo, None
    acc["int8_weight_only"] = accuracy(wo, dev)
    figures["int8_weight_only_linear_size_ratio"] = wos["linear_size_ratio"]
    try:  # torchao is optional: measured when importable, to document the choice
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

            tao = copy.deepcopy(base)
            quantize_(tao, Int8DynamicActivationInt8WeightConfig())
        models["torchao_int8_dynamic"], engines["torchao_int8_dynamic"] = tao, None
        acc["torchao_int8_dynamic"] = accuracy(tao, dev)
    except Exception as exc:  # not installed, or its eager path failed here: say which
        figures["torchao"] = f"not measured: {type(exc).__name__}: {exc}"[:300]
    return {"acc": acc, "figures": figures, "models": models, "engines": engines}


def lowrank_arms(base: torch.nn.Module, tok: Any, dev: Any, args: argparse.Namespace, seed: int,
                 first: bool) -> dict[str, Any]:
    """Low rank of one baseline: spectral init at the budget, recovery, then int8 on top."""
    from lowcarb.compress import lowrank, quantize
    from lowcarb.compress.lowrank import LowRankConfig
    from lowcarb.compress.quantize import DynamicInt8

    acc: dict[str, float] = {}
    figures: dict[str, Any] = {}
    lr0 = copy.deepcopy(base)
    ls = lowrank.apply(lr0, LowRankConfig(param_ratio=args.param_ratio, targets=("*encoder*",)))
    figures["lowrank"] = {
        "targets": "*encoder* (every Linear of the 6 encoder layers)",
        "target_params_before": ls["target_params_before"],
        "target_params_after": ls["target_params_after"],
        "kept_param_ratio": ls["target_ratio"],
        "params_before": ls.params_before,
        "params_after": ls.params_after,
        "layers_factorized": len(ls["ranks"]),
        "layers_kept_dense": len(ls["skipped"]),
        "ranks": ls["ranks"],
        "mean_energy_kept": sum(ls["energy_kept"].values()) / max(len(ls["energy_kept"]), 1),
    }
    acc["lowrank_svd_no_recovery"] = accuracy(lr0, dev)
    lr_fd = copy.deepcopy(lr0)
    figures["recover_frobenius"] = recover(lr_fd, tok, args, "frobenius", base, seed)
    acc["lowrank_frobenius"] = accuracy(lr_fd, dev)
    log(f"seed {seed}: recovered with Frobenius decay")
    out: dict[str, Any] = {"acc": acc, "figures": figures, "kept_ratio": ls["target_ratio"]}
    if first:
        lr_wd = lr0
        figures["recover_weight_decay"] = recover(lr_wd, tok, args, "weight", base, seed)
        acc["lowrank_weight_decay"] = accuracy(lr_wd, dev)
        log("recovered with weight decay")
        lrq = copy.deepcopy(lr_fd)
        lqs = quantize.apply(lrq, DynamicInt8())
        acc["lowrank_int8"] = accuracy(lrq, dev)
        out["models"] = {"lowrank": lr_fd, "lowrank_int8": lrq}
        out["engines"] = {"lowrank": None, "lowrank_int8": lqs["backend"]}
    return out


def onnx_arms(base: torch.nn.Module, dev: Any, lat_batches: list[Any], figures: dict[str, Any],
              acc: dict[str, float]) -> dict[str, Any]:
    """onnxruntime sessions of the exported baseline, fp32 and int8 (when the extra is installed)."""
    try:
        from lowcarb.compress.export_onnx import OnnxExportConfig, export, load_session, run_onnx
    except ImportError as exc:
        figures["onnx"] = f"not measured: {exc}"
        return {}
    tmp = Path(tempfile.mkdtemp(prefix="lowcarb-onnx-"))
    es = export(base, lat_batches[0], tmp / "minilm.onnx", OnnxExportConfig(int8=True))
    figures["onnx"] = es.to_dict()
    sessions = {name: load_session(path, threads=1)
                for name, path in (("onnx_fp32", es.fp32_path), ("onnx_int8", es.path))}
    correct = total = 0
    for batch in dev:
        logits = run_onnx(sessions["onnx_int8"], batch)
        correct += int((torch.from_numpy(logits).argmax(-1) == batch["labels"]).sum())
        total += len(batch["labels"])
    acc["onnx_int8"] = correct / total
    return sessions


def latency(models: dict[str, torch.nn.Module], engines: dict[str, str | None], sessions: dict[str, Any],
            lat_batches: list[Any], rounds: int) -> dict[str, list[float]]:
    """Alternated rounds: every model (and onnxruntime session) once per round, over the batches."""
    from lowcarb.compress.export_onnx import run_onnx

    times: dict[str, list[float]] = {name: [] for name in [*models, *sessions]}
    for name, model in models.items():  # warm-up
        if engines[name]:
            torch.backends.quantized.engine = engines[name]
        time_pass(lambda b, m=model: m(**b), lat_batches[:1])
    for _ in range(rounds):
        for name, model in models.items():
            if engines[name]:  # packed weights run on their engine
                torch.backends.quantized.engine = engines[name]
            times[name].append(time_pass(lambda b, m=model: m(**b), lat_batches))
        for name, session in sessions.items():
            times[name].append(time_pass(lambda b, s=session: run_onnx(s, b), lat_batches))
    return times


def main() -> None:
    args = parse_args()
    from _sst2 import (
        baseline_metrics,
        dev_loader,
        example_batches,
        load_baseline,
        subset_description,
    )

    from lowcarb.train import benchmark_latency

    seeds = [0] if args.quick else parse_seeds(args.seeds)
    load = check_quiet_machine_for(args)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    figures: dict[str, Any] = {
        "subset": subset_description(args.n),
        "settings": {k: v for k, v in vars(args).items()},
        "seeds": seeds,
        "per_seed": {},
    }
    t0 = time.perf_counter()
    acc_seeds: dict[int, dict[str, float]] = {}
    models: dict[str, torch.nn.Module] = {}
    engines: dict[str, str | None] = {}
    sessions: dict[str, Any] = {}
    first_acc: dict[str, float] = {}
    lat_batches: list[Any] = []
    b1 = None
    for index, seed in enumerate(seeds):
        first = index == 0
        base, tok = load_baseline(seed)
        dev: Any = dev_loader(tok, 64)
        if args.quick:  # two dev batches: the smoke test checks the plumbing, not the figures
            dev = [b for _, b in zip(range(2), dev, strict=False)]
        acc = {"fp32": accuracy(base, dev)}
        q = int8_arms(base, tok, dev, args, seed, first)
        lr = lowrank_arms(base, tok, dev, args, seed, first)
        acc |= q["acc"] | lr["acc"]
        acc_seeds[seed] = acc
        figures["per_seed"][str(seed)] = {"baseline_fit": baseline_metrics(seed).get("fit"),
                                          "dev_accuracy": acc, **q["figures"], **lr["figures"]}
        if first:
            inputs = lambda b: {k: v for k, v in b.items() if k != "labels"}  # noqa: E731
            lat_batches = [inputs(b) for _, b in zip(range(args.latency_batches), dev_loader(tok, 32),
                                                       strict=False)]
            b1, _ = example_batches(tok)
            models = {"fp32": base, **q["models"], **lr["models"]}
            engines = {"fp32": None, **q["engines"], **lr["engines"]}
            figures["kept_param_ratio"] = lr["kept_ratio"]
            figures["int8_linear_size_ratio"] = q["figures"]["int8_linear_size_ratio"]
            figures["smooth_alpha"] = q["figures"]["smooth_alpha"]["chosen"]
            first_acc = acc
            if not args.no_onnx:
                sessions = onnx_arms(base, dev, lat_batches, figures, first_acc)
    figures["latency"] = {
        "threads": 1, "batch_size": 32, "batches_per_pass": len(lat_batches),
        "padded_lengths": [int(b["input_ids"].shape[1]) for b in lat_batches],
        "rounds": args.latency_rounds, "models": f"seed {seeds[0]}'s",
        "method": "models alternated each round; median over rounds of one pass",
    }
    times = latency(models, engines, sessions, lat_batches, args.latency_rounds)
    lat = {name: median(v) for name, v in times.items()}
    log("latency measured")
    figures["latency_pass_ms_median"] = lat
    figures["latency_pass_ms_all"] = times
    figures["speedup_vs_fp32_b32"] = {name: lat["fp32"] / v for name, v in lat.items()}
    b1_lat = {}
    for name in ("fp32", "int8_smooth", "int8", "lowrank", "lowrank_int8"):
        if engines[name]:
            torch.backends.quantized.engine = engines[name]
        b1_lat[name] = benchmark_latency(models[name], b1, threads=1, repeats=20)["p50_ms"]
    figures["latency_b1_p50_ms"] = b1_lat
    # Over seeds: every arm measured on every seed; first-seed-only arms as single figures.
    over_seeds = {name: drop_over_seeds([acc_seeds[s]["fp32"] for s in seeds], [acc_seeds[s][name] for s in seeds])
                  for name in ("int8", "int8_smooth", "lowrank_svd_no_recovery", "lowrank_frobenius")}
    figures["accuracy_over_seeds"] = over_seeds
    drop1 = {name: round((first_acc["fp32"] - a) * 100, 3) for name, a in first_acc.items()}
    figures["first_seed_accuracy_drop_pt"] = drop1
    figures["wall_s"] = time.perf_counter() - t0
    if SWEEPS.exists():
        figures["sweeps"] = json.loads(SWEEPS.read_text())

    claims = [
        # lowcarb's int8 for MiniLM: dynamic, per-channel weights, SmoothQuant strength chosen
        # on training batches; plain dynamic int8 (no smoothing) is reported beside it.
        claim("quantize.int8_speedup_b32", round(lat["fp32"] / lat["int8_smooth"], 3), ">=", 2.5),
        claim("quantize.int8_accuracy_drop_pt", over_seeds["int8_smooth"]["drop_pt"], "<=", 1.0),
        claim("quantize.int8_linear_size_ratio", round(figures["int8_linear_size_ratio"], 3), ">=", 3.5),
        reported("quantize.int8_smooth_alpha", figures["smooth_alpha"]),
        reported("quantize.int8_no_smoothing_speedup_b32", round(lat["fp32"] / lat["int8"], 3)),
        reported("quantize.int8_no_smoothing_accuracy_drop_pt", over_seeds["int8"]["drop_pt"]),
        claim("lowrank.speedup_b32", round(lat["fp32"] / lat["lowrank"], 3), ">=", 1.4),
        claim("lowrank.accuracy_drop_pt", over_seeds["lowrank_frobenius"]["drop_pt"], "<=", 1.5),
        reported("lowrank_quantize.speedup_b32", round(lat["fp32"] / lat["lowrank_int8"], 3)),
        reported("lowrank.kept_param_ratio", round(figures["kept_param_ratio"], 4)),
        reported("lowrank.svd_no_recovery_accuracy_drop_pt", over_seeds["lowrank_svd_no_recovery"]["drop_pt"]),
        reported("lowrank.weight_decay_recovery_accuracy_drop_pt", drop1["lowrank_weight_decay"]),
        reported("quantize.int8_per_tensor_accuracy_drop_pt", drop1["int8_per_tensor"]),
    ]
    if "int8_x86_engine" in lat:
        claims.append(reported("quantize.int8_x86_engine_speedup_b32", round(lat["fp32"] / lat["int8_x86_engine"], 3)))
    if "onnx_int8" in lat:
        claims.append(reported("onnx.int8_speedup_b32", round(lat["fp32"] / lat["onnx_int8"], 3)))
    for c in claims:
        print(f"{c['id']:<48} {c['value']!s:>10}  target {c['target']!s:<8} met {c['met']}")
    path = write_results(NAME, figures, claims, load=load, args=args)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
