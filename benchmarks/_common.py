"""Shared helpers for benchmark scripts: machine description, claims, results files.

A claim's `met` is always computed here from the measured value, never typed in.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import json
import operator
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Smoke runs (tiny budgets) and runs that overrode the quiet-machine check write here instead
# (gitignored): their figures are not claims, and a smoke file once replaced a real one on main.
SMOKE_DIR = RESULTS_DIR / "smoke"

# Parsed-argument name -> option of every flag that makes a run a smoke run or lets it start on a
# busy machine. write_results() routes such runs to SMOKE_DIR; the results-file test refuses a
# committed command that names one.
SMOKE_OPTIONS: dict[str, str] = {
    "smoke": "--smoke",
    "quick": "--quick",
    "dry_run": "--dry-run",
    "dev_limit": "--dev-limit",
    "max_dev": "--max-dev",
    "trial_max_steps": "--trial-max-steps",
    "allow_load": "--allow-load",
}

# What every results file holds, and every claim in it (benchmarks/RESULTS.md is built from them).
RESULTS_KEYS = ("benchmark", "command", "machine", "figures", "claims")
CLAIM_KEYS = ("id", "value", "target", "met")

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
}


RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def sweep_started() -> dict[str, Any]:
    """What a sweep records about its start: the time, the 1-minute load, the commit (marked
    -dirty when the working tree had changes)."""
    done = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "describe", "--always",
                           "--dirty"], capture_output=True, text=True)
    return {"at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "load_before": os.getloadavg()[0], "commit": done.stdout.strip() or None}


def recipe_defaults(recipe: str, stage: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `train:` section and stage `stage`'s settings of recipes/<recipe>.yaml.

    A benchmark that claims to measure a recipe's defaults reads them from here, so the figures
    and the recipe a user runs cannot drift apart (they once did: lr 3e-3 here, 5e-4 there)."""
    from lowcarb.pipeline.recipe import read_recipe_file

    raw = read_recipe_file(RECIPES_DIR / f"{recipe}.yaml")
    for step in raw.get("stages", []):
        if isinstance(step, dict) and stage in step:
            return dict(raw.get("train") or {}), dict(step[stage] or {})
    raise KeyError(f"recipes/{recipe}.yaml has no {stage!r} stage")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # no /proc (not Linux): fall back to what platform knows
    return platform.processor() or platform.machine()


def cpu_id() -> str | None:
    """"family 26 model 2 stepping 1" from /proc/cpuinfo, or None off Linux.

    Cloud VMs often hide the model name ("AMD EPYC" on hosts two generations apart, whose
    latencies differed 2x in issue 18's reruns); family/model/stepping still tell them apart."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("cpu family", "model", "stepping") and key not in fields:
                fields[key] = value.strip()
            if not line.strip() and fields:
                break  # the first processor's block is enough
    except OSError:
        return None
    if "cpu family" not in fields:
        return None
    return f"family {fields['cpu family']} model {fields.get('model', '?')} stepping {fields.get('stepping', '?')}"


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_id": cpu_id(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def meets(value: Any, op: str, target: Any) -> bool:
    """Whether a measured value meets `op target`; `value=None` (not measured) is unmet."""
    if op not in _OPS:
        raise ValueError(f"unknown comparison {op!r}; use one of {sorted(_OPS)}")
    return value is not None and bool(_OPS[op](value, target))


def claim(claim_id: str, value: Any, op: str, target: Any) -> dict[str, Any]:
    """A claim with `met` computed from the measured value; `value=None` (not measured) is unmet."""
    met = meets(value, op, target)
    return {"id": claim_id, "value": value, "target": f"{op} {target}", "met": met}


def parse_target(target: str) -> tuple[str, Any]:
    """"<= 0.75" -> ("<=", 0.75): the inverse of the target text claim() writes."""
    op, _, bound = target.partition(" ")
    if op not in _OPS:
        raise ValueError(f"target {target!r} does not start with one of {sorted(_OPS)} and a space")
    try:
        return op, ast.literal_eval(bound)
    except (ValueError, SyntaxError):
        raise ValueError(f"target {target!r}: {bound!r} is not a number or literal") from None


def met_for(value: Any, target: str | None) -> bool | None:
    """The `met` a results file must hold for this value and target text: None for a figure
    reported without a target, else the comparison claim() makes (unmeasured is unmet)."""
    if target is None:
        return None
    return meets(value, *parse_target(target))


def results_file_problems(data: Any) -> list[str]:
    """What is wrong with one parsed results file (empty when nothing): the five keys, each
    claim's four keys, `met` as the value and target give it, no smoke / allow-load command."""
    if not isinstance(data, dict):
        return [f"a results file is a JSON object, not {type(data).__name__}"]
    problems = [f"no {key!r}" for key in RESULTS_KEYS if key not in data]
    flags = smoke_flags_in(str(data.get("command", "")))
    if flags:
        problems.append(f"command {data['command']!r} is a smoke / busy-machine run ({', '.join(flags)})")
    claims = data.get("claims", [])
    if not isinstance(claims, list):
        return [*problems, "'claims' is not a list"]
    for i, c in enumerate(claims):
        missing = [key for key in CLAIM_KEYS if not isinstance(c, dict) or key not in c]
        if missing:
            problems.append(f"claim {i} lacks {missing}")
            continue
        try:
            expected = met_for(c["value"], c["target"])
        except (ValueError, TypeError) as exc:
            problems.append(f"claim {c['id']!r}: {exc}")
            continue
        if c["met"] is not expected:
            problems.append(f"claim {c['id']!r}: met is {c['met']!r}, but {c['value']!r} {c['target']} gives {expected!r}")
    return problems



def reported(claim_id: str, value: Any) -> dict[str, Any]:
    """A figure the issue asks to report without a target."""
    return {"id": claim_id, "value": value, "target": None, "met": None}


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# Benchmarks whose figures are claims run alone: above this 1-minute load average another job
# is competing for the 2 cores, and both timings and energies would be the other job's too.
MAX_LOAD = 1.5


def load_average() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"1min": round(one, 2), "5min": round(five, 2), "15min": round(fifteen, 2)}


def check_quiet_machine(allow_load: bool = False, max_load: float = MAX_LOAD) -> dict[str, Any]:
    """The load average before the run (recorded in the results). Refuses to start when the
    1-minute load is above `max_load`, unless `allow_load` (then it warns loudly and the results
    say the machine was busy)."""
    load = load_average()
    busy = load["1min"] > max_load
    if busy and not allow_load:
        raise SystemExit(
            f"load average {load['1min']} > {max_load}: other work is running, so timings and "
            "energies would be shared with it. Wait until the machine is quiet, or pass "
            "--allow-load to run anyway (a trial run: its JSON goes to results/smoke/)."
        )
    if busy:
        print(
            f"WARNING: load average {load['1min']} > {max_load}; the results record a busy machine",
            file=sys.stderr,
            flush=True,
        )
    return {
        "before": load,
        "max_load": max_load,
        "busy": busy,
        "allow_load": bool(allow_load),  # the check was overridden: write_results() treats it as smoke
        "allowed_busy": bool(allow_load and busy),
    }


def add_load_arguments(parser: Any) -> None:
    parser.add_argument(
        "--allow-load", action="store_true",
        help=f"run even when the 1-minute load average is above {MAX_LOAD} (a trial run: its JSON "
        "goes to results/smoke/, never results/)",
    )  # fmt: skip


def check_quiet_machine_for(args: argparse.Namespace) -> dict[str, Any]:
    """check_quiet_machine() for a script's parsed arguments: a smoke run or --allow-load may start
    on a busy machine (write_results() then puts its JSON in SMOKE_DIR, never RESULTS_DIR)."""
    record = check_quiet_machine(allow_load=bool(smoke_options(args)))
    # what the user overrode, not what the smoke run allowed: write_results() names the real reasons
    record["allow_load"] = bool(getattr(args, "allow_load", False))
    return record


def parse_and_check(
    parser: argparse.ArgumentParser, argv: list[str] | None = None
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Add --allow-load, parse the command line, check the machine is quiet: (args, load record)."""
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    return args, check_quiet_machine_for(args)


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2] (the training seeds of both arms of every accuracy claim)."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--seeds must be integers separated by commas, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds needs distinct seeds, got {text!r}")
    return seeds


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation, min, max of one figure over seeds (values kept)."""
    vals = [float(v) for v in values]
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": vals,
    }


def drop_over_seeds(reference: list[float], technique: list[float]) -> dict[str, Any]:
    """Accuracy drop in points, mean(reference) - mean(technique) over seeds, with each arm's
    spread and the per-seed paired differences (the claim's `met` uses the mean drop)."""
    ref, tech = spread(reference), spread(technique)
    out: dict[str, Any] = {
        "drop_pt": round((ref["mean"] - tech["mean"]) * 100, 3),
        "reference": ref,
        "technique": tech,
    }
    if len(reference) == len(technique):
        out["paired_drop_pt"] = spread([(r - t) * 100 for r, t in zip(reference, technique, strict=True)])
    return out


def smoke_options(args: argparse.Namespace | None) -> list[str]:
    """The smoke / allow-load options set in parsed arguments (after argparse, so abbreviations
    such as `--allow` count too)."""
    if args is None:
        return []
    return [flag for attr, flag in SMOKE_OPTIONS.items() if getattr(args, attr, None) not in (None, False)]


def smoke_flags_in(command: str) -> list[str]:
    """The smoke / allow-load options a command line names (`--dev-limit=8` counts)."""
    words = {word.split("=", 1)[0] for word in command.split()}
    return [flag for flag in SMOKE_OPTIONS.values() if flag in words]


def results_dir_for(reasons: list[str]) -> Path:
    """RESULTS_DIR for a full run on a quiet machine, SMOKE_DIR when any smoke reason is given."""
    return SMOKE_DIR if reasons else RESULTS_DIR


def write_results(
    name: str,
    figures: dict[str, Any],
    claims: list[dict[str, Any]],
    command: str | None = None,
    load: dict[str, Any] | None = None,
    args: argparse.Namespace | None = None,
) -> Path:
    """Write results/<name>.json; `load` is check_quiet_machine()'s record (load before the run).

    A smoke run (a smoke option in `args` or in the command) or one whose quiet-machine check was
    overridden goes to results/smoke/<name>.json instead, with the reasons in the file: only full
    runs on a quiet machine may produce claims."""
    command = command or " ".join([Path(sys.executable).name, *sys.argv])
    reasons = list(dict.fromkeys([
        *smoke_options(args),
        *smoke_flags_in(command),
        *(["--allow-load"] if (load or {}).get("allow_load") else []),
    ]))  # fmt: skip
    payload: dict[str, Any] = {
        "benchmark": name,
        "command": command,
        "machine": machine_info(),
        "load_average": {**(load or {}), "after": load_average()},
        "figures": figures,
        "claims": claims,
    }
    if reasons:
        payload["smoke"] = reasons
    folder = results_dir_for(reasons)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    if reasons:
        print(
            f"smoke run ({', '.join(reasons)}): results written to {path}, not to {RESULTS_DIR} "
            "(claims come only from full runs on a quiet machine)",
            file=sys.stderr,
            flush=True,
        )
    return path
