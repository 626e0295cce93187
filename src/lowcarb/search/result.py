"""One result type for every search: HPO, PARSEC, Weightless PARSEC, AutoDistil and muTransfer.

    result = SearchResult.from_trials("parsec", "cnn", objectives, trials, windows=[fp1, fp2])
    result.trials / .pareto / .chosen / .total / .figures; result.save("search.json")

A search tries candidates (trials): each has parameters (hyperparameters, an architecture, a
student), the metrics it reached, and, when it ran in a ledger window of its own, that window's
footprint. The first objective is the quality, the second (if any) the cost: the Pareto front and
the chosen trial are computed the same way for every search, and `total` says what the whole
search cost. Searches whose work is shared between candidates (PARSEC trains one weight store,
AutoDistil one supernet per sub-space) give the ledger windows that did the work (`windows`);
their sum is the total, and trials without a window of their own are shown as "shared".
`figures` holds a search's headline numbers (muTransfer's tuning energy ratio, ...), `details`
whatever else it wants kept (PARSEC's learned distribution, ...). The report renders all of it
(`lowcarb.report.search`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lowcarb.errors import ConfigError

Direction = Literal["maximize", "minimize"]

# Cost keys of a footprint summary, summed into a search's total.
TOTAL_KEYS = ("energy_j", "co2_g", "operational_g", "embodied_g", "duration_s")


@dataclass(frozen=True)
class Objective:
    """A metric the search optimises. The first objective of a search is its quality."""

    metric: str
    direction: Direction

    def __post_init__(self) -> None:
        if self.direction not in ("maximize", "minimize"):
            raise ConfigError(
                f"objective {self.metric!r}: direction must be maximize or minimize, "
                f"got {self.direction!r}"
            )


@dataclass(frozen=True)
class Constraint:
    """A trial is feasible when `metric <= max_value` (for example CO2e per 1,000 inferences)."""

    metric: str
    max_value: float


@dataclass(frozen=True)
class TrialRecord:
    number: int
    state: str  # complete, pruned, failed, running, waiting
    params: dict[str, Any]
    metrics: dict[str, float]
    footprint: dict[str, Any] | None  # footprint_summary() of the trial's own window
    intermediate: dict[int, float] = field(default_factory=dict)
    feasible: bool = True
    error: str | None = None
    retry_of: int | None = None
    worker: str | None = None


def footprint_summary(fp: Any) -> dict[str, Any]:
    """The footprint fields kept with a trial or a window (JSON)."""
    methods = {name: c.method for name, c in getattr(fp, "components", {}).items()}
    return {
        "duration_s": float(fp.duration_s),
        "energy_j": float(fp.energy_j),
        "operational_g": float(fp.operational_g),
        "embodied_g": float(fp.embodied_g),
        "co2_g": float(fp.total_g),
        "methods": methods,
    }


def footprint_metrics(fp: Any) -> dict[str, float]:
    """Cost metrics every trial gets from its own ledger window (usable as objectives)."""
    return {
        "trial_energy_j": float(fp.energy_j),
        "trial_co2_g": float(fp.total_g),
        "trial_duration_s": float(fp.duration_s),
    }


def is_finite(value: Any) -> bool:
    """A number that can be compared (a metric read back from JSON may be null)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _dominates(a: Sequence[float], b: Sequence[float], objectives: Sequence[Objective]) -> bool:
    better_or_equal = all(
        (x >= y) if o.direction == "maximize" else (x <= y)
        for x, y, o in zip(a, b, objectives, strict=True)
    )
    return better_or_equal and any(x != y for x, y in zip(a, b, strict=True))


def pareto_front(records: Sequence[TrialRecord], objectives: Sequence[Objective]) -> list[int]:
    """Numbers of the feasible complete trials no other feasible trial dominates."""
    points = {
        r.number: [r.metrics[o.metric] for o in objectives]
        for r in records
        if r.feasible and all(is_finite(r.metrics.get(o.metric)) for o in objectives)
    }
    return sorted(
        n
        for n, p in points.items()
        if not any(_dominates(q, p, objectives) for m, q in points.items() if m != n)
    )


def choose(
    records: Sequence[TrialRecord],
    pareto: Sequence[int],
    objectives: Sequence[Objective],
    choose_within: float = 0.0,
) -> int | None:
    """The trial to keep: the cheapest Pareto trial within `choose_within` of the best quality."""
    if not pareto:
        return None
    by_number = {r.number: r for r in records}
    q = objectives[0]
    sign = 1.0 if q.direction == "maximize" else -1.0
    best_q = max(sign * by_number[n].metrics[q.metric] for n in pareto)
    close = [n for n in pareto if sign * by_number[n].metrics[q.metric] >= best_q - choose_within]
    if len(objectives) == 1:
        return max(close, key=lambda n: (sign * by_number[n].metrics[q.metric], -n))
    cost = objectives[1]
    csign = 1.0 if cost.direction == "minimize" else -1.0
    return min(close, key=lambda n: (csign * by_number[n].metrics[cost.metric], n))


def total_footprint(records: Sequence[TrialRecord]) -> dict[str, Any]:
    """What the search cost when every trial ran in its own window: the sum over all trials,
    stopped and failed included."""
    total = dict.fromkeys(TOTAL_KEYS, 0.0)
    by_state: dict[str, float] = {}
    measured = 0
    for r in records:
        if not r.footprint:
            continue
        measured += 1
        for key in total:
            total[key] += float(r.footprint.get(key, 0.0))
        by_state[r.state] = by_state.get(r.state, 0.0) + float(r.footprint["energy_j"])
    return {
        **total,
        "energy_j_by_state": by_state,
        "trials_measured": measured,
        # A killed worker never closes its window: its trial's energy is unknown, not zero.
        "trials_without_footprint": [r.number for r in records if not r.footprint],
    }


def window_summary(fp: Any) -> dict[str, Any]:
    """A window's name and footprint summary (from a Footprint, or such a summary already)."""
    if isinstance(fp, Mapping):
        return dict(fp)
    return {"name": fp.name, **footprint_summary(fp)}


def windows_total(windows: Iterable[Any]) -> dict[str, Any]:
    """What the search cost when its work was shared between trials: the sum of its top-level
    ledger windows (Footprints or `window_summary` dicts), each listed by name."""
    listed = [window_summary(fp) for fp in windows]
    total = {key: sum(float(w[key]) for w in listed) for key in TOTAL_KEYS}
    return {**total, "windows": listed, "energy_j_by_state": {}, "trials_without_footprint": []}


@dataclass(frozen=True)
class SearchResult:
    """A search's trials, its Pareto front, the chosen trial and what the whole search cost."""

    study_name: str
    storage: str
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    n_trials: int
    trials: tuple[TrialRecord, ...]
    pareto: tuple[int, ...]
    chosen: int | None
    total: dict[str, Any]
    method: str = "hpo"  # hpo, parsec, weightless, autodistil, mutransfer
    figures: dict[str, Any] = field(default_factory=dict)  # headline numbers, flat
    details: dict[str, Any] = field(default_factory=dict)  # anything else the search keeps

    @classmethod
    def from_trials(
        cls,
        method: str,
        name: str,
        objectives: Sequence[Objective],
        trials: Sequence[TrialRecord],
        *,
        windows: Sequence[Any] = (),
        chosen: int | None = None,
        choose_within: float = 0.0,
        figures: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
        storage: str = "",
    ) -> SearchResult:
        """Pareto front and chosen trial (unless the search chose itself) from the trials; the
        total from `windows` when given (shared work), else from the trials' own windows."""
        pareto = pareto_front(trials, objectives)
        if chosen is None:
            chosen = choose(trials, pareto, objectives, choose_within)
        return cls(
            study_name=name,
            storage=storage,
            objectives=tuple(objectives),
            constraints=(),
            n_trials=len(trials),
            trials=tuple(trials),
            pareto=tuple(pareto),
            chosen=chosen,
            total=windows_total(windows) if windows else total_footprint(trials),
            method=method,
            figures=dict(figures or {}),
            details=dict(details or {}),
        )

    def trial(self, number: int) -> TrialRecord:
        for t in self.trials:
            if t.number == number:
                return t
        raise KeyError(f"no trial {number} in study {self.study_name!r}")

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "study_name": self.study_name,
            "storage": self.storage,
            "objectives": [asdict(o) for o in self.objectives],
            "constraints": [asdict(c) for c in self.constraints],
            "n_trials": self.n_trials,
            "trials": [
                {**asdict(t), "intermediate": {str(k): v for k, v in t.intermediate.items()}}
                for t in self.trials
            ],
            "pareto": list(self.pareto),
            "chosen": self.chosen,
            "counts": self.counts(),
            "total": self.total,
            "figures": self.figures,
            "details": self.details,
        }

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON (atomically; a diverged, infinite metric is written null)."""
        from lowcarb.files import path_errors, write_json

        path = Path(path)
        with path_errors(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
        return write_json(path, self.to_dict(), non_finite="null")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchResult:
        return cls(
            study_name=data["study_name"],
            storage=data["storage"],
            objectives=tuple(Objective(**o) for o in data["objectives"]),
            constraints=tuple(Constraint(**c) for c in data["constraints"]),
            n_trials=int(data["n_trials"]),
            trials=tuple(
                TrialRecord(
                    **{
                        **t,
                        "intermediate": {int(k): v for k, v in t["intermediate"].items()},
                    }
                )
                for t in data["trials"]
            ),
            pareto=tuple(data["pareto"]),
            chosen=data["chosen"],
            total=dict(data["total"]),
            # search.json files written before these fields existed are HPO studies.
            method=data.get("method", "hpo"),
            figures=dict(data.get("figures") or {}),
            details=dict(data.get("details") or {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> SearchResult:
        return cls.from_dict(json.loads(Path(path).read_text()))


def json_default(obj: Any) -> Any:
    """JSON for tuples, sets and the rest (non-finite floats and objects as strings)."""
    if isinstance(obj, tuple | set):
        return list(obj)
    return str(obj)
