"""Efficiency-aware search on the digits CNN: Pareto vs accuracy-only, pruning, two workers.

    .venv/bin/python benchmarks/hpo_digits.py            # starts its own PostgreSQL (.ci/postgres.sh)
    .venv/bin/python benchmarks/hpo_digits.py --quick    # a smaller budget, for a smoke run

Claims (issue 7), all measured in this one run, one thread per process (torch.set_num_threads(1)):

- hpo.pareto_energy_reduction: the multi-objective study (dev accuracy vs CO2e per 1,000
  inferences) finds a model whose CO2e per 1,000 inferences is >= 30 % below that of the
  accuracy-only study's best model, within 0.5 accuracy points of it. Same seed, same budget; the
  two studies' trials are interleaved (one trial of each in turn) so that the load other work puts
  on the machine falls on both alike. The two final models are re-measured side by side at the
  end (alternated, median of repeats) and the claim uses those figures.
- hpo.digits_pruning_search_energy_ratio (reported): the measured energy of the whole
  multi-objective search with the median pruner / without it (same seed, same budget, interleaved
  too), when the best accuracy found with pruning is within 0.5 points of the best without. The
  claim hpo.pruning_search_energy_ratio is decided in benchmarks/hpo_minilm.py: 270 digits dev
  examples cannot resolve half a point (two examples do).
- hpo.two_workers_wall_ratio: wall time of a study of fixed candidates on PostgreSQL with two
  worker processes / one worker process (alternated, median of repeats); each process one
  thread, each in its own session (setsid; see timed_study). The wall time runs from the moment
  every worker is ready (interpreter started, data loaded, one warm-up trial run outside the
  study) to the moment the last worker's run_search returns; the start-up time is reported.

The search space: the digits CNN's width (conv channels), depth (conv blocks), learning rate and
int8 dynamic quantization on/off (lowcarb.compress.quantize). The model is built here, because
lowcarb.models' DigitsCNN has a fixed depth of two conv blocks; trials are driven through
lowcarb.data / lowcarb.train / lowcarb.compress directly (no recipe), measured by lowcarb.measure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import (  # noqa: E402
    add_load_arguments,
    check_quiet_machine_for,
    claim,
    median,
    reported,
    write_results,
)

from lowcarb.compress.quantize import DynamicInt8  # noqa: E402
from lowcarb.compress.quantize import quantize_ as quantize  # noqa: E402
from lowcarb.data import load_data  # noqa: E402
from lowcarb.data.config import DataConfig  # noqa: E402
from lowcarb.search.hpo import Objective, SearchConfig, open_study, run_search  # noqa: E402
from lowcarb.search.pruning import PruningConfig  # noqa: E402
from lowcarb.search.space import CategoricalParam, FloatParam, IntParam, SearchSpace  # noqa: E402
from lowcarb.search.storage import open_storage  # noqa: E402
from lowcarb.train.config import TrainConfig  # noqa: E402
from lowcarb.train.evaluate import evaluate  # noqa: E402
from lowcarb.train.footprint import inference_footprint  # noqa: E402
from lowcarb.train.loop import fit  # noqa: E402

NAME = "hpo_digits"
THREADS = 1
SEED = 0
ACC_TOLERANCE = 0.005  # "within 0.5 accuracy points"
DATA = DataConfig(seed=0)
BATCH = 64
INFERENCES = 1000

SPACE = SearchSpace.of(
    {
        "model.width": IntParam(4, 32, step=4),
        "model.depth": IntParam(1, 3),
        "train.lr": FloatParam(1e-4, 1e-1, log=True),
        "quantize": CategoricalParam((False, True)),
    }
)


class DepthCNN(nn.Module):
    """`depth` conv-BN-ReLU blocks of `width` channels, 2x2 max-pool, a two-layer head."""

    def __init__(self, width: int, depth: int, input_shape=(1, 8, 8), num_labels=10) -> None:
        super().__init__()
        c, h, w = input_shape
        blocks: list[nn.Module] = []
        for _ in range(depth):
            blocks += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            c = width
        self.features = nn.Sequential(*blocks, nn.MaxPool2d(2))
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(width * (h // 2) * (w // 2), 64), nn.ReLU(), nn.Linear(64, num_labels)
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values))  # (B, 10)


def per_1k(model: nn.Module, batch) -> dict[str, float]:
    fp = inference_footprint(model, batch, INFERENCES, THREADS, name="inference x1000")
    served = float(fp.units or INFERENCES)
    scale = 1000.0 / served
    return {"co2_g_per_1k": fp.total_g * scale, "energy_j_per_1k": fp.energy_j * scale}


def serving_model(state_path: Path, params: dict) -> nn.Module:
    model = DepthCNN(params["model.width"], params["model.depth"])
    model.load_state_dict(torch.load(state_path, weights_only=True))
    model.eval()
    if params["quantize"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's quantized-tensor deprecation
            model = quantize(model, DynamicInt8()).model
    return model


def make_trial(data, epochs: int, models_dir: Path):
    train_loader = data.loader("train", BATCH, shuffle=True, seed=SEED)
    dev_loader = data.loader("dev", 256)
    serve_batch = next(iter(data.loader("test", 32)))
    steps_per_epoch = len(train_loader)

    def trial(ctx):
        p = ctx.params
        torch.manual_seed(SEED)
        model = DepthCNN(p["model.width"], p["model.depth"])

        def on_step(step: int, m: nn.Module) -> bool:
            if step % steps_per_epoch == 0:  # end of an epoch: report dev accuracy
                acc = evaluate(m, dev_loader, quiet=True)["accuracy"]
                m.train()
                ctx.report(step // steps_per_epoch - 1, acc)  # may stop the trial here
            return False

        config = TrainConfig(epochs=epochs, lr=p["train.lr"], seed=SEED, quiet=True)
        try:
            fit(model, train_loader, None, config, on_step=on_step)
        except ValueError as exc:
            if "training loss became" not in str(exc):
                raise
            # Diverged (too high a learning rate): a poor model, kept and measured as it is.
        state = models_dir / f"{ctx.number}.pt"
        state.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), state)
        served = serving_model(state, p)
        acc = evaluate(served, dev_loader, quiet=True)["accuracy"]
        return {"accuracy": acc, **per_1k(served, serve_batch), "params": sum(q.numel() for q in model.parameters())}

    return trial


def search_config(objectives, n_trials: int, pruning: PruningConfig | None) -> SearchConfig:
    return SearchConfig(
        space=SPACE,
        objectives=objectives,
        n_trials=n_trials,
        pruning=pruning,
        seed=SEED,
        startup_trials=8,
        choose_within=ACC_TOLERANCE,
    )


# ---------------------------------------------------------------------------------------------
# claims 1 and 2: three studies, interleaved
# ---------------------------------------------------------------------------------------------


def run_studies(work: Path, n_trials: int, epochs: int) -> dict:
    data = load_data(DATA)
    acc_only = (Objective("accuracy", "maximize"),)
    pareto = (Objective("accuracy", "maximize"), Objective("co2_g_per_1k", "minimize"))
    # No warm-up epochs: after one epoch a poor learning rate already shows on digits; the
    # first 4 finished trials are the warm-up of the median.
    pruning = PruningConfig(warmup_steps=0, min_trials=4)
    studies = {
        "accuracy_only": search_config(acc_only, n_trials, None),
        "pareto": search_config(pareto, n_trials, None),
        "pareto_pruned": search_config(pareto, n_trials, pruning),
    }
    results = {}
    # One trial of each study in turn: run_search joins its study and runs until it has k
    # finished trials, so background load is spread over the three alike.
    for k in range(1, n_trials + 1):
        for name, cfg in studies.items():
            cfg_k = dataclasses.replace(cfg, n_trials=k)
            results[name] = run_search(
                make_trial(data, epochs, work / name / "models"), cfg_k, run_dir=work / name
            )
        print(f"  trial {k}/{n_trials} done", flush=True)
    return {"data": data, "results": results}


def best_accuracy_trial(result):
    complete = [t for t in result.trials if t.state == "complete"]
    return max(complete, key=lambda t: (t.metrics["accuracy"], -t.metrics["co2_g_per_1k"]))


def remeasure(data, work: Path, picks: dict[str, tuple[str, object]], repeats: int) -> dict:
    """Re-measure the picked models' CO2e per 1,000 inferences side by side, alternated."""
    serve_batch = next(iter(data.loader("test", 32)))
    test_loader = data.loader("test", 256)
    models = {
        key: serving_model(work / study / "models" / f"{t.number}.pt", t.params)
        for key, (study, t) in picks.items()
    }
    samples: dict[str, list[float]] = {k: [] for k in models}
    energy: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for key, model in models.items():
            m = per_1k(model, serve_batch)
            samples[key].append(m["co2_g_per_1k"])
            energy[key].append(m["energy_j_per_1k"])
    return {
        key: {
            "co2_g_per_1k_median": median(samples[key]),
            "co2_g_per_1k_samples": samples[key],
            "energy_j_per_1k_median": median(energy[key]),
            "test_accuracy": evaluate(models[key], test_loader, quiet=True)["accuracy"],
        }
        for key in models
    }


# ---------------------------------------------------------------------------------------------
# claim 3: one vs two workers on PostgreSQL
# ---------------------------------------------------------------------------------------------


def worker_main(args) -> int:
    torch.set_num_threads(THREADS)
    data = load_data(DATA)
    warm_up(data, args.epochs, args.storage)
    if args.barrier:
        # Interpreter start-up, imports and first-call initialisation are not the study: wait
        # here until the parent starts the clock for all workers at once.
        Path(f"{args.barrier}.ready-{os.getpid()}").touch()
        while not Path(args.barrier).exists():
            time.sleep(0.02)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = search_config((Objective("accuracy", "maximize"),), args.n_trials, None)
        run_search(
            make_trial(data, args.epochs, Path(tmp) / "models"),
            cfg,
            run_dir=tmp,
            storage=args.storage,
            study_name=args.study,
        )
    if args.barrier:
        Path(f"{args.barrier}.done-{os.getpid()}").touch()  # before interpreter teardown
    return 0


class _WarmUpContext:
    number = -1
    params = {"model.width": 4, "model.depth": 1, "train.lr": 1e-3, "quantize": True}

    def report(self, step: int, quality: float) -> None:
        pass  # the warm-up run is not a trial: nothing to report or prune


def warm_up(data, epochs: int, storage: str | None = None) -> None:
    """One throw-away trial outside any study: torch, the quantizer, the ledger's meters and
    Optuna's sampler pay their first-call costs before the clock starts (measured: ~15 s for the
    first trial of a fresh process on the loaded machine, ~2 s for the next ones)."""
    import optuna

    from lowcarb.search.hpo import make_sampler

    with tempfile.TemporaryDirectory() as tmp:
        make_trial(data, 1, Path(tmp))(_WarmUpContext())
        if storage is not None:
            open_storage(storage, tmp)  # SQLAlchemy's and Alembic's first-use imports
    study = optuna.create_study(sampler=make_sampler(search_config((Objective("accuracy", "maximize"),), 1, None)))
    study.ask()


def timed_study(url: str, study: str, candidates: list[dict], workers: int, epochs: int, work: Path) -> dict:
    cfg = search_config((Objective("accuracy", "maximize"),), len(candidates), None)
    # The candidates are enqueued before any worker starts: both layouts run the same work.
    open_study(open_storage(url, work), study, cfg, initial_params=candidates, distributed=True)
    barrier = work / f"{study}.go"
    cmd = [sys.executable, __file__, "--worker", "--storage", url, "--study", study,
           "--n-trials", str(len(candidates)), "--epochs", str(epochs), "--barrier", str(barrier)]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    launched = time.perf_counter()
    # Each worker in a session of its own, as separate terminals or machines would be: Linux
    # autogroup scheduling gives all processes of one session a single share of the CPU.
    procs = [subprocess.Popen(cmd, env=env, start_new_session=True) for _ in range(workers)]
    while len(list(work.glob(f"{study}.go.ready-*"))) < workers:
        if any(p.poll() not in (None, 0) for p in procs):
            raise RuntimeError("a worker died before the study started")
        time.sleep(0.02)
    start = time.perf_counter()
    barrier.touch()
    # The study is done when every worker's run_search has returned (each writes a marker);
    # interpreter teardown after that is not the study's time.
    while len(list(work.glob(f"{study}.go.done-*"))) < workers:
        if any(p.poll() not in (None, 0) for p in procs):
            break
        time.sleep(0.02)
    wall_s = time.perf_counter() - start
    codes = [p.wait() for p in procs]
    startup_s = start - launched
    if any(codes):
        raise RuntimeError(f"a worker failed: exit codes {codes}")
    import optuna

    trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    span_s = (max(t.datetime_complete for t in complete) - min(t.datetime_start for t in complete)).total_seconds()
    energy_j = sum(t.user_attrs["lowcarb.footprint"]["energy_j"] for t in complete)
    return {
        "wall_s": wall_s,
        "worker_startup_s": startup_s,
        "trial_span_s": span_s,
        "complete": len(complete),
        "workers_seen": len({t.user_attrs.get("lowcarb.worker") for t in complete}),
        "trials_energy_j": energy_j,
    }


def two_worker_claim(url: str, n_trials: int, epochs: int, repeats: int, work: Path) -> dict:
    import optuna

    # Fixed candidates from a seeded random sampler: the same work for both layouts.
    sampler_study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=SEED))
    candidates = []
    for _ in range(n_trials):
        t = sampler_study.ask()
        from lowcarb.search.space import suggest

        params = suggest(t, SPACE)
        params["train.lr"] = min(max(params["train.lr"], 1e-3), 3e-2)  # trainable: no NaN trials
        candidates.append(params)
        sampler_study.tell(t, 0.0)
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(repeats):
        for workers in (1, 2):  # alternated
            runs[workers].append(
                timed_study(url, f"bench-{workers}w-{r}-{os.getpid()}", candidates, workers, epochs, work)
            )
            print(f"  {workers} worker(s), repeat {r + 1}: {runs[workers][-1]['wall_s']:.1f} s", flush=True)
    one = median([x["wall_s"] for x in runs[1]])
    two = median([x["wall_s"] for x in runs[2]])
    return {"runs": runs, "one_worker_wall_s_median": one, "two_workers_wall_s_median": two,
            "ratio": two / one, "candidates": candidates}


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small budget (smoke run)")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--storage", help=argparse.SUPPRESS)
    ap.add_argument("--study", help=argparse.SUPPRESS)
    ap.add_argument("--n-trials", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--barrier", help=argparse.SUPPRESS)
    add_load_arguments(ap)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args)
    # The load is read once, before the PostgreSQL server below starts (its start-up is ours).
    if "LOWCARB_BENCH_LOAD" in os.environ:
        load = json.loads(os.environ["LOWCARB_BENCH_LOAD"])
    else:
        load = check_quiet_machine_for(args)
        os.environ["LOWCARB_BENCH_LOAD"] = json.dumps(load)

    url = os.environ.get("LOWCARB_TEST_POSTGRES_URL")
    if not url:
        # The same throw-away server the tests use; it is stopped when this run ends.
        os.execvp("bash", ["bash", str(ROOT / ".ci" / "postgres.sh"), sys.executable, *sys.argv])

    torch.set_num_threads(THREADS)
    os.environ.setdefault("LOWCARB_NO_STORE", "1")
    optuna_quiet()
    n_trials = args.trials or (8 if args.quick else 32)
    epochs = args.epochs or (3 if args.quick else 4)
    worker_trials = 4 if args.quick else 12
    repeats = 1 if args.quick else 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lowcarb-hpo-bench-") as tmp:
        work = Path(tmp)
        print(f"studies: {n_trials} trials x 3, {epochs} epochs each", flush=True)
        t0 = time.perf_counter()
        out = run_studies(work, n_trials, epochs)
        studies_s = time.perf_counter() - t0
        data, results = out["data"], out["results"]
        acc_only, pareto, pruned = results["accuracy_only"], results["pareto"], results["pareto_pruned"]

        best_a = best_accuracy_trial(acc_only)
        # The Pareto study's pick: the cheapest trial on its front within 0.5 points of the
        # accuracy-only best (the claim's own condition), measured on dev like the searches.
        front = [pareto.trial(n) for n in pareto.pareto]
        close = [t for t in front if t.metrics["accuracy"] >= best_a.metrics["accuracy"] - ACC_TOLERANCE]
        pick_b = min(close, key=lambda t: t.metrics["co2_g_per_1k"]) if close else None
        picks = {"accuracy_only_best": ("accuracy_only", best_a)}
        if pick_b is not None:
            picks["pareto_pick"] = ("pareto", pick_b)
        print("re-measuring the picked models side by side", flush=True)
        measured = remeasure(data, work, picks, repeats=3 if args.quick else 7)

        if pick_b is not None:
            reduction = 1.0 - measured["pareto_pick"]["co2_g_per_1k_median"] / measured["accuracy_only_best"]["co2_g_per_1k_median"]
        else:
            reduction = None  # no trial within 0.5 points: the claim is not met

        best_full = max(t.metrics["accuracy"] for t in pareto.trials if t.state == "complete")
        best_pruned = max(t.metrics["accuracy"] for t in pruned.trials if t.state == "complete")
        energy_ratio = pruned.total["energy_j"] / pareto.total["energy_j"]
        pruning_value = energy_ratio if best_pruned >= best_full - ACC_TOLERANCE else None

        print("one vs two workers on PostgreSQL", flush=True)
        workers = two_worker_claim(url, worker_trials, epochs, repeats, work)

    figures = {
        "threads_per_process": THREADS,
        "trials_per_study": n_trials,
        "epochs_per_trial": epochs,
        "data": "scikit-learn digits (lowcarb default: fixed 70/15/15 split: train 1257, dev 270, test 270)",
        "search_space": {name: repr(p) for name, p in SPACE.params},
        "accuracy_only": _study_figures(acc_only),
        "pareto": _study_figures(pareto),
        "pareto_pruned": _study_figures(pruned),
        "accuracy_only_best": {"trial": best_a.number, "params": best_a.params,
                               "dev_accuracy": best_a.metrics["accuracy"],
                               "co2_g_per_1k_in_search": best_a.metrics["co2_g_per_1k"],
                               **measured["accuracy_only_best"]},
        "pareto_pick": None if pick_b is None else {
            "trial": pick_b.number, "params": pick_b.params, "dev_accuracy": pick_b.metrics["accuracy"],
            "co2_g_per_1k_in_search": pick_b.metrics["co2_g_per_1k"], **measured["pareto_pick"]},
        "pareto_energy_reduction": reduction,
        "best_dev_accuracy_without_pruning": best_full,
        "best_dev_accuracy_with_pruning": best_pruned,
        "search_energy_j_without_pruning": pareto.total["energy_j"],
        "search_energy_j_with_pruning": pruned.total["energy_j"],
        "search_co2_g_without_pruning": pareto.total["co2_g"],
        "search_co2_g_with_pruning": pruned.total["co2_g"],
        "pruning_search_energy_ratio": energy_ratio,
        "two_workers": workers,
        "studies_wall_s": studies_s,
        "total_benchmark_wall_s": time.perf_counter() - started,
    }
    claims = [
        claim("hpo.pareto_energy_reduction", reduction, ">=", 0.30),
        reported("hpo.digits_pruning_search_energy_ratio", pruning_value),
        claim("hpo.two_workers_wall_ratio", workers["ratio"], "<=", 0.65),
    ]
    path = write_results(NAME, figures, claims, load=load, args=args)
    print(json.dumps(claims, indent=2))
    print(f"wrote {path}")
    return 0


def _study_figures(result) -> dict:
    return {
        "trials": [
            {"number": t.number, "state": t.state, "params": t.params,
             "dev_accuracy": t.metrics.get("accuracy"), "co2_g_per_1k": t.metrics.get("co2_g_per_1k"),
             "energy_j": (t.footprint or {}).get("energy_j")}
            for t in result.trials
        ],
        "counts": result.counts(),
        "search_energy_j": result.total["energy_j"],
        "search_co2_g": result.total["co2_g"],
        "search_duration_s": result.total["duration_s"],
        "energy_j_by_state": result.total["energy_j_by_state"],
        "best_dev_accuracy": max((t.metrics["accuracy"] for t in result.trials if t.state == "complete"), default=None),
        "pareto_trials": list(result.pareto),
        "chosen": result.chosen,
    }


def optuna_quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
