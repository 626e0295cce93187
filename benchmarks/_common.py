"""Shared helpers for benchmark scripts: machine description, claims, results files.

A claim's `met` is always computed here from the measured value, never typed in.
"""

from __future__ import annotations

import datetime as _dt
import json
import operator
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # no /proc (not Linux): fall back to what platform knows
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def claim(claim_id: str, value: Any, op: str, target: Any) -> dict[str, Any]:
    """A claim with `met` computed from the measured value; `value=None` (not measured) is unmet."""
    if op not in _OPS:
        raise ValueError(f"unknown comparison {op!r}; use one of {sorted(_OPS)}")
    met = value is not None and bool(_OPS[op](value, target))
    return {"id": claim_id, "value": value, "target": f"{op} {target}", "met": met}


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
            "--allow-load to run anyway (the results will say so)."
        )
    if busy:
        print(
            f"WARNING: load average {load['1min']} > {max_load}; the results record a busy machine",
            file=sys.stderr,
            flush=True,
        )
    return {"before": load, "max_load": max_load, "busy": busy, "allowed_busy": bool(allow_load and busy)}


def add_load_arguments(parser: Any) -> None:
    parser.add_argument(
        "--allow-load", action="store_true",
        help=f"run even when the 1-minute load average is above {MAX_LOAD} (recorded as busy)",
    )  # fmt: skip


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


def write_results(
    name: str,
    figures: dict[str, Any],
    claims: list[dict[str, Any]],
    command: str | None = None,
    load: dict[str, Any] | None = None,
) -> Path:
    """Write results/<name>.json; `load` is check_quiet_machine()'s record (load before the run)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "command": command or " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "load_average": {**(load or {}), "after": load_average()},
        "figures": figures,
        "claims": claims,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path
