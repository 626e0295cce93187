"""The recipes as a new user runs them on a many-class task: HWU64 (64 intents), defaults, only the
data paths changed (issue 18 item 0).

Claims (benchmarks/results/text_defaults.json):
- text.hwu64_default_test_accuracy  >= 0.88  `text-classification` recipe, mean test accuracy over
                                             the seeds (--seeds, default 0,1,2)
- text.hwu64_default_wall_s         reported wall time of `lowcarb run recipes/text-classification.yaml`
                                             (seed 0), the whole command as a user waits for it
- text.hwu64_<recipe>_accuracy_drop_pt        mean test accuracy of the text-classification runs minus
                                             the mean of <recipe>'s final models, in points:
    lora-minilm       <= 1.0  (issue 18's lora.accuracy_drop_pt target)
    compress-minilm   <= 2.5  (low rank <= 1.5 then int8 <= 1.0: the sum of its two stages' targets;
                               started from each seed's text-classification model)
    distill-minilm    <= 3 % of the full fine-tune's accuracy (distill.student_accuracy_ratio >= 0.97)
    earlybert-minilm  <= 1.5  (earlybert.accuracy_drop_pt)
    compress-all      <= 2.0  (combined.accuracy_drop_pt)

Every run is `python -m lowcarb run RECIPE --set data.train=... --set data.dev=... --set
data.test=... --set data.label_column=category [--set train.seed=S] --quiet` in a subprocess with
a fresh LOWCARB_HOME (compress-minilm also gets `--set model.name=<the text-classification run's
model folder>`, the one model path its recipe asks for). Dev is HWU64's val.csv (early stopping and
every choice the recipes make), test is reported. The recipes' defaults were chosen by the sweeps
of issue 18 on val (never test); their tables are in the results' `sweeps` entry
(benchmarks/sweeps/hwu64.json).

Also recorded, per recipe over its seeds: the command's wall time and the run's ledger energy (the
stages' windows summed, from each run's metrics.json), and how each training stage ended.

Run alone on a quiet machine (refuses above load 1.5; --allow-load to override):
    .venv/bin/python benchmarks/text_defaults.py                   # 3 seeds x 6 recipes
    .venv/bin/python benchmarks/text_defaults.py --keep-runs DIR --resume --seeds 0,1,2
        # each finished run is kept in DIR/<recipe>-<seed>.json with its model; a rerun with
        # --resume reuses them, so a crash or a session's end loses only the run in progress,
        # and seeds can be added one at a time (each run records the commit it ran on)
    .venv/bin/python benchmarks/text_defaults.py --seeds 0 --recipes text-classification
    .venv/bin/python benchmarks/text_defaults.py --keep-runs DIR --resume --import-runs benchmarks/results/text_defaults.json
        # seeds an empty DIR with the runs an earlier results file recorded (their model folders
        # may be gone: a kept run is rerun only when a later run needs its model)
    .venv/bin/python benchmarks/text_defaults.py --keep-runs DIR --resume --seeds-for compress-all=0,1
        # a recipe scored on fewer seeds than --seeds: its drop is against the text-classification
        # runs of the same seeds (paired), and the seeds are recorded next to its claim
Smoke:  .venv/bin/python benchmarks/text_defaults.py --smoke      (tiny subsets, JSON in results/smoke/)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    add_load_arguments,
    check_quiet_machine_for,
    claim,
    cpu_id,
    cpu_model,
    parse_seeds,
    reported,
    spread,
    write_results,
)

NAME = "text_defaults"
ROOT = Path(__file__).resolve().parents[1]
HWU64_DIR = Path(os.environ.get("LOWCARB_HWU64_DIR", ROOT.parent / "shared" / "data" / "hwu64"))
SWEEPS = Path(__file__).resolve().parent / "sweeps" / "hwu64.json"
DEFAULT_RECIPE = "text-classification"
# Recipe -> (target on the accuracy drop in points, or None for a ratio target handled below).
TARGETS: dict[str, float | None] = {
    "lora-minilm": 1.0,
    "compress-minilm": 2.5,
    "distill-minilm": None,  # 3 % of the full fine-tune's accuracy
    "earlybert-minilm": 1.5,
    "compress-all": 2.0,
}
DISTILL_RATIO = 0.97


def data_overrides(folder: Path) -> list[str]:
    return [
        f"data.train={folder / 'train.csv'}",
        f"data.dev={folder / 'val.csv'}",
        f"data.test={folder / 'test.csv'}",
        "data.label_column=category",
    ]


def smoke_data(tmp: Path) -> Path:
    """A few rows of every intent from each HWU64 file (plumbing only: the figures mean nothing)."""
    import csv

    out = tmp / "hwu64-smoke"
    out.mkdir(exist_ok=True)
    for name, per_label in (("train.csv", 3), ("val.csv", 1), ("test.csv", 1)):
        with open(HWU64_DIR / name, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        kept: list[dict[str, str]] = []
        for label in sorted({r["category"] for r in rows}):
            kept += [r for r in rows if r["category"] == label][:per_label]
        with open(out / name, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "category"])
            writer.writeheader()
            writer.writerows(kept)
    return out


def run_recipe(recipe: str, overrides: list[str], out: Path, home: Path) -> dict[str, Any]:
    """`lowcarb run` in a subprocess: its wall time, final metrics and every model's accuracy."""
    cmd = [sys.executable, "-m", "lowcarb", "run", str(ROOT / "recipes" / f"{recipe}.yaml"),
           *[x for o in overrides for x in ("--set", o)], "--out", str(out), "--quiet"]
    env = {**os.environ, "LOWCARB_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out)
    wall_s = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    (metrics_path,) = sorted(out.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)[-1:]
    run = json.loads(metrics_path.read_text())
    from lowcarb.report.summary import model_rows, paybacks

    rows = model_rows(run)
    return {
        **run_costs(run),
        "command": " ".join(cmd),
        # Seeds may be added in later sessions, on another host: wall, latency and energy compare
        # only between runs of one host (accuracy does not depend on it).
        "cpu": {"model": cpu_model(), "id": cpu_id()},
        "wall_s": round(wall_s, 1),
        "run_dir": str(metrics_path.parent),
        "model_dir": (run.get("model") or {}).get("path"),
        "models": [{"label": r.label, "test_accuracy": r.metrics.get("test_accuracy"),
                    "dev_accuracy": r.metrics.get("dev_accuracy"),
                    "latency_b1_p50_ms": r.metrics.get("latency_b1_p50_ms"),
                    "params": r.metrics.get("params")} for r in rows],
        "test_accuracy": rows[-1].metrics.get("test_accuracy"),
        "flagged_stages": [p.label for p in paybacks(rows) if p.accuracy_lost],
        "stages": [{"label": s["label"], "duration_s": (s.get("footprint") or {}).get("duration_s"),
                    "summary_keys": sorted((s.get("summary") or {}).keys())} for s in run["stages"]],
        "stdout_tail": done.stdout[-1500:],
    }


def run_costs(run: dict[str, Any]) -> dict[str, Any]:
    """From a run's metrics.json: its ledger energy (sum of the stages' windows, J), how each
    training stage ended (epochs, steps, whether early stopping fired) and its final model's
    serving figures (latency at batch 1 and 32, bytes)."""
    from lowcarb.report.summary import model_rows

    stages = run.get("stages") or []
    energy = [((s.get("footprint") or {}).get("energy_j")) for s in stages]
    training = {s["label"]: {k: (s.get("summary") or {}).get(k)
                             for k in ("epochs", "steps", "best_step", "stopped_early", "stop_reason")}
                for s in stages if "stopped_early" in (s.get("summary") or {})}
    rows = model_rows(run) if stages else []
    final = rows[-1].metrics if rows else {}
    return {"energy_j": round(sum(e for e in energy if e is not None), 1) if any(e is not None for e in energy)
            else None, "training": training,
            "final_model": {k: final.get(k) for k in ("latency_b1_p50_ms", "latency_b32_p50_ms", "size_bytes")}}


def with_costs(record: dict[str, Any]) -> dict[str, Any]:
    """A kept run recorded before run_costs (or part of it) existed gets the missing figures from
    its run folder, if still there."""
    metrics = Path(record.get("run_dir") or "") / "metrics.json"
    missing = [k for k in ("energy_j", "training", "final_model") if k not in record]
    if missing and record.get("run_dir") and metrics.exists():
        costs = run_costs(json.loads(metrics.read_text()))
        return {**record, **{k: costs[k] for k in missing}}
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of every recipe")
    parser.add_argument("--recipes", default=",".join([DEFAULT_RECIPE, *TARGETS]),
                        help="recipes to run (text-classification always runs: it is the reference)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few rows of HWU64 and 1-step budgets: checks the plumbing, JSON in results/smoke/")
    parser.add_argument("--keep-runs", metavar="DIR", help="keep every run's folder under DIR")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the finished runs recorded under --keep-runs DIR (needs --keep-runs)")
    parser.add_argument("--seeds-for", action="append", default=[], metavar="RECIPE=SEEDS",
                        help="score RECIPE on these seeds only (a subset of --seeds); repeatable")
    parser.add_argument("--import-runs", metavar="RESULTS_JSON",
                        help="first write the runs recorded in an earlier results file into --keep-runs DIR "
                             "(runs already kept there win), for --resume to reuse")
    add_load_arguments(parser)
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    if (args.resume or args.import_runs) and not args.keep_runs:
        parser.error("--resume and --import-runs work on the runs kept under --keep-runs DIR: give --keep-runs too")
    recipes = [r for r in args.recipes.split(",") if r and r != DEFAULT_RECIPE]
    unknown = [r for r in recipes if r not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}; choose from {sorted(TARGETS)}")
    recipe_seeds = {r: seeds for r in recipes}
    for item in args.seeds_for:
        recipe, _, text = item.partition("=")
        if recipe not in recipe_seeds:
            parser.error(f"--seeds-for {item!r}: {recipe!r} is not among --recipes {recipes}")
        subset = parse_seeds(text)
        if not set(subset) <= set(seeds):
            parser.error(f"--seeds-for {item!r}: seeds {subset} are not all in --seeds {seeds}")
        recipe_seeds[recipe] = subset
    if args.import_runs:
        imported = import_runs(Path(args.import_runs), Path(args.keep_runs))
        print(f"imported {len(imported)} run(s) from {args.import_runs}: {', '.join(imported) or 'none new'}")
    load = check_quiet_machine_for(args)

    with tempfile.TemporaryDirectory(prefix="lowcarb-text-defaults-") as tmp_text:
        tmp = Path(args.keep_runs) if args.keep_runs else Path(tmp_text)
        tmp.mkdir(parents=True, exist_ok=True)
        data = smoke_data(tmp) if args.smoke else HWU64_DIR  # in --keep-runs DIR: --resume finds the same paths
        budget = ["train.max_steps=2", "train.epochs=1"] if args.smoke else []
        runs: dict[str, dict[str, Any]] = {}
        for seed in seeds:
            base = [*data_overrides(data), f"train.seed={seed}", *budget]
            ref = _run_or_reuse(DEFAULT_RECIPE, seed, base, tmp, args.resume)
            runs[f"{DEFAULT_RECIPE}/{seed}"] = ref
            print(f"{DEFAULT_RECIPE} seed {seed}: test {ref['test_accuracy']:.4f}  {ref['wall_s']:.0f} s", flush=True)
            for recipe in recipes:
                if seed not in recipe_seeds[recipe]:
                    continue
                extra = [f"model.name={ref['model_dir']}"] if recipe == "compress-minilm" else []
                if (recipe == "compress-minilm" and not (ref.get("model_dir") and Path(ref["model_dir"]).exists())
                        and _kept(recipe, seed, [*base, *extra], tmp, args.resume) is None):
                    # compress-minilm starts from this seed's fine-tuned model, whose folder an
                    # imported run no longer has: fine-tune it again first.
                    print(f"{DEFAULT_RECIPE} seed {seed}: its model folder is gone and compress-minilm "
                          "needs it: fine-tuning again", flush=True)
                    ref = _run_or_reuse(DEFAULT_RECIPE, seed, base, tmp, resume=False)
                    runs[f"{DEFAULT_RECIPE}/{seed}"] = ref
                    extra = [f"model.name={ref['model_dir']}"]
                if args.smoke and recipe == "earlybert-minilm":
                    extra.append("stages.earlybird.max_search_steps=2")
                result = _run_or_reuse(recipe, seed, [*base, *extra], tmp, args.resume)
                runs[f"{recipe}/{seed}"] = result
                print(f"{recipe} seed {seed}: test {result['test_accuracy']:.4f}  {result['wall_s']:.0f} s",
                      flush=True)

    full = [runs[f"{DEFAULT_RECIPE}/{s}"]["test_accuracy"] for s in seeds]
    scored = {DEFAULT_RECIPE: seeds, **recipe_seeds}
    figures: dict[str, Any] = {
        "data": {"train": "hwu64/train.csv (8,884)", "dev": "hwu64/val.csv (1,076)",
                 "test": "hwu64/test.csv (1,076)", "labels": 64},
        "seeds": seeds,
        "runs": runs,
        "text_classification_test_accuracy": spread(full),
        "text_classification_wall_s": spread([runs[f"{DEFAULT_RECIPE}/{s}"]["wall_s"] for s in seeds]),
        # Per recipe over its seeds: the whole command's wall time, and the ledger's energy where
        # every run has it (runs imported from a results file without their folders do not).
        "wall_s": {r: spread([runs[f"{r}/{s}"]["wall_s"] for s in own]) for r, own in scored.items()},
        "energy_j": {r: spread([runs[f"{r}/{s}"]["energy_j"] for s in own]) for r, own in scored.items()
                     if all(runs[f"{r}/{s}"].get("energy_j") is not None for s in own)},
        "final_model_latency_b32_p50_ms": {
            r: spread([runs[f"{r}/{s}"]["final_model"]["latency_b32_p50_ms"] for s in own]) for r, own in scored.items()
            if all((runs[f"{r}/{s}"].get("final_model") or {}).get("latency_b32_p50_ms") for s in own)},
    }
    if SWEEPS.exists():
        figures["sweeps"] = json.loads(SWEEPS.read_text())
    claims = [
        claim("text.hwu64_default_test_accuracy", round(spread(full)["mean"], 4), ">=", 0.88),
        reported("text.hwu64_default_wall_s", runs[f"{DEFAULT_RECIPE}/{seeds[0]}"]["wall_s"]),
    ]
    for recipe in recipes:
        # Paired: the reference is the text-classification runs of the seeds this recipe ran.
        own = recipe_seeds[recipe]
        ref_accs = [runs[f"{DEFAULT_RECIPE}/{s}"]["test_accuracy"] for s in own]
        accs = [runs[f"{recipe}/{s}"]["test_accuracy"] for s in own]
        drop = (spread(ref_accs)["mean"] - spread(accs)["mean"]) * 100
        target = TARGETS[recipe]
        if target is None:  # a ratio target, as a drop: (1 - 0.97) of the full fine-tune's accuracy
            target = round((1 - DISTILL_RATIO) * spread(ref_accs)["mean"] * 100, 2)
        figures[f"{recipe}_seeds"] = own
        figures[f"{recipe}_test_accuracy"] = spread(accs)
        figures[f"{recipe}_paired_drop_pt"] = spread([(f - a) * 100 for f, a in zip(ref_accs, accs, strict=True)])
        claims.append(claim(f"text.hwu64_{recipe}_accuracy_drop_pt", round(drop, 2), "<=", target))
    for c in claims:
        print(f"{c['id']:<48} {c['value']!s:>10}  target {c['target']!s:<8} met {c['met']}")
    path = write_results(NAME, figures, claims, load=load, args=args)
    print(f"wrote {path}")
    return 0


def import_runs(results: Path, keep: Path) -> list[str]:
    """Write each run recorded in an earlier text_defaults results file to keep/<recipe>-<seed>.json
    (the record --resume reads), unless keep already has that run. Returns the imported keys."""
    try:
        runs = json.loads(results.read_text())["figures"]["runs"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"--import-runs {results}: not a text_defaults results file with figures.runs ({e})") from e
    keep.mkdir(parents=True, exist_ok=True)
    imported = []
    for key, run in runs.items():
        recipe, _, seed = key.partition("/")
        record = keep / f"{recipe}-{seed}.json"
        if not record.exists():
            record.write_text(json.dumps(run, indent=2) + "\n")
            imported.append(key)
    return imported


def _kept(recipe: str, seed: int, overrides: list[str], tmp: Path, resume: bool) -> dict[str, Any] | None:
    """The run recorded in tmp/<recipe>-<seed>.json by an earlier invocation, when `resume` is on,
    its command had the same overrides and the recipe's settings have not changed since the commit
    it ran on (comments may have); else None. Its model folder may be gone (an imported run): only compress-minilm needs one."""
    record = tmp / f"{recipe}-{seed}.json"
    if not (resume and record.exists()):
        return None
    kept: dict[str, Any] = json.loads(record.read_text())
    if kept.get("overrides") == overrides and _recipe_unchanged_since(recipe, kept.get("commit")):
        return kept
    print(f"{recipe} seed {seed}: {record} is stale (other overrides, or the recipe's settings changed since), "
          "running again", flush=True)
    return None


def _run_or_reuse(recipe: str, seed: int, overrides: list[str], tmp: Path, resume: bool) -> dict[str, Any]:
    """One recipe run, or with `resume` the one kept from an earlier invocation (see _kept)."""
    record = tmp / f"{recipe}-{seed}.json"
    kept = _kept(recipe, seed, overrides, tmp, resume)
    if kept is not None:
        print(f"{recipe} seed {seed}: reusing {record} (commit {kept.get('commit')})", flush=True)
        return with_costs(kept)
    folder = tmp / f"{recipe}-{seed}"
    if folder.exists():  # a run cut off half-way leaves its folder: start clean
        shutil.rmtree(folder)
    commit = _commit()  # before the run: a recipe edited while it runs must make the record stale
    result = run_recipe(recipe, overrides, _fresh(tmp, f"{recipe}-{seed}"), tmp / "home")
    result["overrides"] = overrides
    result["commit"] = commit
    record.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _recipe_unchanged_since(recipe: str, commit: str | None) -> bool:
    """Whether recipes/<recipe>.yaml (committed or not) holds the same settings as at `commit`:
    new defaults make a kept run stale; an edited comment does not."""
    if not commit:
        return False
    from lowcarb.errors import ConfigError
    from lowcarb.pipeline.safe_yaml import load_yaml_text

    path = f"recipes/{recipe}.yaml"
    then = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], capture_output=True, text=True)
    if then.returncode != 0:  # a commit git does not have, or no such recipe then
        return False
    try:  # read as lowcarb reads recipes; a recipe that no longer parses or exists is stale
        return bool(load_yaml_text(then.stdout, path) == load_yaml_text((ROOT / path).read_text(), path))
    except (ConfigError, OSError):
        return False


def _commit() -> str | None:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip() or None


def _fresh(parent: Path, name: str) -> Path:
    folder = parent / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


if __name__ == "__main__":
    sys.exit(main())
