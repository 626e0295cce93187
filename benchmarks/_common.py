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


def write_results(
    name: str, figures: dict[str, Any], claims: list[dict[str, Any]], command: str | None = None
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "command": command or " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "figures": figures,
        "claims": claims,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path
