"""What a report says, computed from a stored run (plain dicts): model rows, Pareto fronts, payback.

A run dict is what the runner stores (and writes to `metrics.json`):

    {"id", "name", "status", "recipe": {...}, "stages": [record, ...], "error": str | None}

and each stage record is

    {"label", "name", "status", "changes_model", "auto", "model_version",
     "footprint": {"duration_s", "energy_j", "operational_g", "embodied_g", ...} | None,
     "metrics": {"dev_accuracy", "test_accuracy", "latency_b1_p50_ms", "params", "size_bytes",
                 "flops_per_example", "per1k_energy_j", "per1k_operational_g",
                 "per1k_embodied_g", "per1k_total_g", ...} | None,
     "summary": {...}}

`model_version` counts model changes: 0 is the model as loaded, and every stage that changes the
model starts a new version. A record with `metrics` is an evaluation of the version it names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lowcarb.report.formatting import (
    fmt_bytes,
    fmt_count,
    fmt_g,
    fmt_interval,
    fmt_j,
    fmt_ms,
    fmt_num,
    fmt_pct,
    number,
)

# The note under which a stage records a search result (lowcarb.search.result.SearchResult).
SEARCH_NOTE = "search"

Run = Mapping[str, Any]

# A stage whose model loses more accuracy than this (percentage points) against the model before
# it is flagged: its saving costs accuracy. A run's recipe may set its own
# (`evaluation.accuracy_tolerance_pt`), which `accuracy_tolerance_pt(run)` reads.
ACCURACY_TOLERANCE_PT = 2.0


@dataclass(frozen=True)
class ModelRow:
    """One model the run produced (or started from), with its evaluation and its production cost."""

    label: str  # the stage that produced it, or "input model"
    version: int
    metrics: Mapping[str, Any]
    # The CO2e and energy spent by the stage that produced this model (0 for the input model).
    cost_energy_j: float
    cost_operational_g: float
    cost_embodied_g: float

    @property
    def cost_total_g(self) -> float:
        return self.cost_operational_g + self.cost_embodied_g

    @property
    def accuracy(self) -> float | None:
        return accuracy_of(self.metrics)

    @property
    def is_lm(self) -> bool:
        """A causal LM, served per generated token (lowcarb.pipeline.lm_evaluation)."""
        return "per1k_tokens_total_g" in self.metrics

    @property
    def unit(self) -> str:
        """What the serving cost counts: inferences, or generated tokens for a causal LM."""
        return "generated tokens" if self.is_lm else "inferences"

    @property
    def per1k_total_g(self) -> float | None:
        """CO2e per 1,000 serving units (`unit`: inferences, or generated tokens)."""
        return number(self.metrics.get("per1k_tokens_total_g" if self.is_lm else "per1k_total_g"))

    @property
    def latency_ms(self) -> float | None:
        """Batch-1 latency: of an inference, or (causal LM) of one decoded token."""
        if self.is_lm:
            rate = number(self.metrics.get("gen_b1_decode_tokens_per_s"))
            return 1000.0 / rate if rate else None
        return number(self.metrics.get("latency_b1_p50_ms"))


@dataclass(frozen=True)
class Payback:
    """Whether a model-changing stage paid for itself in cheaper inferences."""

    label: str
    against: str  # the model it is compared with
    spent_g: float  # CO2e spent producing the new model (the stage's ledger window)
    saved_g_per_million: float  # CO2e saved per 1e6 inferences (negative: the model costs more)
    payback_inferences: float | None  # units until the saving repays `spent_g`; None if never
    accuracy_delta: float | None
    tolerance_pt: float = ACCURACY_TOLERANCE_PT
    unit: str = "inferences"  # or "generated tokens" (causal LMs): what the saving is counted in

    @property
    def cheaper(self) -> bool:
        return self.saved_g_per_million > 0

    @property
    def accuracy_lost(self) -> bool:
        """True when the model lost more than `tolerance_pt` points against the one before it."""
        # Rounded: 0.93 - 0.95 is -0.0200000000000000018 in floating point, not a loss beyond 2.
        return self.accuracy_delta is not None and round(-self.accuracy_delta * 100, 6) > self.tolerance_pt

    def sentence(self) -> str:
        acc = ""
        if self.accuracy_delta is not None:
            acc = f"; accuracy {self.accuracy_delta * 100:+.2f} points"
        if self.accuracy_lost:
            acc = (
                f"; ACCURACY LOST: {self.accuracy_delta * 100:+.2f} points against "  # type: ignore[operator]
                f"{self.against}, more than the {self.tolerance_pt:g}-point tolerance"
            )
        if not self.cheaper:
            return (
                f"{self.label}: spent {fmt_g(self.spent_g)} CO2e; the model is not cheaper to run "
                f"than {self.against} ({fmt_g(-self.saved_g_per_million)} more per million "
                f"{self.unit}){acc}"
            )
        if self.accuracy_lost:
            # The saving is real but bought with accuracy: say so before the payback figure.
            return (
                f"{self.label}: spent {fmt_g(self.spent_g)} CO2e; the saving costs accuracy: it "
                f"saves {fmt_g(self.saved_g_per_million)} per million {self.unit} against "
                f"{self.against} and would pay back after {fmt_count(self.payback_inferences)} "
                f"{self.unit}{acc}"
            )
        return (
            f"{self.label}: spent {fmt_g(self.spent_g)} CO2e, saves "
            f"{fmt_g(self.saved_g_per_million)} per million {self.unit} against {self.against}, "
            f"pays back after {fmt_count(self.payback_inferences)} {self.unit}{acc}"
        )



def accuracy_of(metrics: Mapping[str, Any]) -> float | None:
    """Test accuracy where there is a test split, else dev accuracy."""
    for key in ("test_accuracy", "dev_accuracy"):
        value = number(metrics.get(key))
        if value is not None:
            return value
    return None


def accuracy_split(rows: Sequence[ModelRow]) -> str:
    """Which split the accuracy column shows."""
    if rows and all(number(r.metrics.get("test_accuracy")) is not None for r in rows):
        return "test"
    return "dev"


def footprint_of(record: Mapping[str, Any]) -> Mapping[str, Any]:
    return record.get("footprint") or {}


def model_rows(run: Run) -> list[ModelRow]:
    """One row per evaluated model version, in run order; the last evaluation of a version wins."""
    records = list(run.get("stages") or [])
    producer: dict[int, Mapping[str, Any]] = {}
    evaluated: dict[int, Mapping[str, Any]] = {}
    for record in records:
        version = int(record.get("model_version") or 0)
        if record.get("changes_model") and record.get("status") == "completed":
            producer[version] = record
        if record.get("metrics"):
            evaluated[version] = record["metrics"]
    rows = []
    for version in sorted(evaluated):
        made_by = producer.get(version)
        fp = footprint_of(made_by) if made_by else {}
        rows.append(
            ModelRow(
                label=str(made_by["label"]) if made_by else "input model",
                version=version,
                metrics=evaluated[version],
                cost_energy_j=number(fp.get("energy_j")) or 0.0,
                cost_operational_g=number(fp.get("operational_g")) or 0.0,
                cost_embodied_g=number(fp.get("embodied_g")) or 0.0,
            )
        )
    return rows


def accuracy_tolerance_pt(run: Run) -> float:
    """The run's accuracy tolerance in points (its recipe's evaluation section, else the default)."""
    evaluation = (run.get("recipe") or {}).get("evaluation") or {}
    value = number(evaluation.get("accuracy_tolerance_pt")) if isinstance(evaluation, Mapping) else None
    return ACCURACY_TOLERANCE_PT if value is None else value


def paybacks(rows: Sequence[ModelRow], tolerance_pt: float = ACCURACY_TOLERANCE_PT) -> list[Payback]:
    """A payback line for every produced model that has an evaluated model before it; a model
    that lost more than `tolerance_pt` accuracy points against the one before it is flagged."""
    out = []
    for previous, current in zip(rows, rows[1:], strict=False):
        before, after = previous.per1k_total_g, current.per1k_total_g
        if before is None or after is None or previous.unit != current.unit:
            continue
        saved_per_inference = (before - after) / 1000.0
        spent = current.cost_total_g
        payback = spent / saved_per_inference if saved_per_inference > 0 else None
        acc_before, acc_after = previous.accuracy, current.accuracy
        out.append(
            Payback(
                label=current.label,
                against=previous.label,
                spent_g=spent,
                saved_g_per_million=saved_per_inference * 1e6,
                payback_inferences=payback,
                accuracy_delta=(
                    acc_after - acc_before
                    if acc_after is not None and acc_before is not None
                    else None
                ),
                tolerance_pt=tolerance_pt,
                unit=current.unit,
            )
        )
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when minimising x (cost) and maximising y (accuracy)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def stage_costs(run: Run) -> list[dict[str, Any]]:
    """Every ledger window of the run (stages and automatic evaluations) with its CO2e."""
    out = []
    for record in run.get("stages") or []:
        fp = footprint_of(record)
        out.append(
            {
                "label": record.get("label", "?"),
                "status": record.get("status", "?"),
                "duration_s": number(fp.get("duration_s")) or 0.0,
                "energy_j": number(fp.get("energy_j")) or 0.0,
                "operational_g": number(fp.get("operational_g")) or 0.0,
                "embodied_g": number(fp.get("embodied_g")) or 0.0,
                "method": energy_method(fp),
            }
        )
    return out


def energy_method(fp: Mapping[str, Any]) -> str:
    """How a window's energy was obtained, e.g. "cpu: measured: rapl; ram: estimated: ..."."""
    components = fp.get("components") or {}
    parts = []
    if isinstance(components, Mapping):
        for name, comp in components.items():
            if isinstance(comp, Mapping) and comp.get("method"):
                parts.append(f"{name}: {comp['method']}")
    return "; ".join(parts) or str(fp.get("method") or "")


def stage_notes(run: Run, max_chars: int = 160) -> list[tuple[str, list[tuple[str, str]]]]:
    """What each stage recorded with ctx.note (steps, stop reason, parameters before/after...)."""
    import json

    out = []
    for record in run.get("stages") or []:
        summary = record.get("summary") or {}
        if not summary:
            continue
        items = []
        for key, value in summary.items():
            if key == SEARCH_NOTE:
                continue  # a search stage's result: the report's search section shows it
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if isinstance(value, float):
                text = f"{value:.4g}"
            if len(text) > max_chars:
                text = text[: max_chars - 3] + "..."
            items.append((str(key), text))
        out.append((str(record.get("label", "?")), items))
    return out


def model_sentence(run: Run) -> str | None:
    """Where the final model was saved and whether the folder reloads it."""
    info = run.get("model")
    if not info:
        return None
    if info.get("reloads"):
        return f"Final model saved in {info.get('path')}; reload it with {info.get('load_with')}(folder)."
    return (
        f"Final model saved in {info.get('path')}, but reloading it failed: "
        f"{info.get('reload_error')}"
    )


def totals(run: Run) -> dict[str, float]:
    costs = stage_costs(run)
    return {
        key: sum(c[key] for c in costs)
        for key in ("duration_s", "energy_j", "operational_g", "embodied_g")
    }


def measurement_notes(run: Run) -> list[str]:
    """Where the run computed and where its serving figures were measured (device, its name,
    precision, threads), one sentence per distinct setting."""
    notes = []
    placement = run.get("placement") or {}
    if placement:
        threads = run.get("threads")
        notes.append(
            f"Computed on {placement.get('device')} ({placement.get('device_name')}) in "
            f"{placement.get('precision')}"
            + (f", {threads} torch thread(s)." if threads else ".")
        )
    groups: dict[tuple[Any, ...], list[str]] = {}
    for r in model_rows(run):
        m = r.metrics
        if m.get("device") is None:
            continue
        key = (m.get("device"), m.get("device_name"), m.get("precision"), m.get("threads"))
        groups.setdefault(key, []).append(r.label)
    lm = any(r.is_lm for r in model_rows(run))
    how = (
        "first-token time and decode rate are medians of repeated greedy generations with the KV "
        "cache, with their 95 % interval."
        if lm
        else "latency is the median of repeated forward passes with its 95 % interval."
    )
    for (device, name, precision, threads), labels in groups.items():
        who = "every model" if len(groups) == 1 else ", ".join(labels)
        notes.append(
            f"Latency and serving energy of {who}: measured on {device} ({name}) in {precision} "
            f"at {threads} thread(s); {how}"
        )
    return notes


def busy_warnings(run: Run) -> list[str]:
    """One warning per evaluated model whose latency was timed on a busy machine."""
    out = []
    for r in model_rows(run):
        m = r.metrics
        if m.get("latency_busy"):
            out.append(
                f"the machine was busy while {r.label} was timed (load average "
                f"{m.get('latency_load_1m', 0):.1f} on {m.get('latency_cores')} core(s)): its "
                "latency is inflated; rerun on a quiet machine before comparing it"
            )
    return out


# The model table, shared by every form: (header, function of a ModelRow -> text).
def cost_cells(row: ModelRow, serving: str) -> list[str]:
    """The model table's last columns: energy, operational and embodied CO2e of serving 1,000
    (`serving`: the metrics' prefix, per1k or per1k_tokens), then what producing the model cost."""
    m = row.metrics
    produced = bool(row.version)  # version 0, the model as loaded, cost nothing in this run
    return [
        fmt_j(number(m.get(f"{serving}_energy_j"))),
        fmt_g(number(m.get(f"{serving}_operational_g"))),
        fmt_g(number(m.get(f"{serving}_embodied_g"))),
        fmt_j(row.cost_energy_j) if produced else "-",
        f"{fmt_g(row.cost_operational_g)} + {fmt_g(row.cost_embodied_g)}" if produced else "-",
    ]


def model_table(rows: Sequence[ModelRow]) -> tuple[list[str], list[list[str]]]:
    if rows and all(r.is_lm for r in rows):
        from lowcarb.report.lm import lm_model_table  # LM columns: per generated token

        return lm_model_table(rows)
    split = accuracy_split(rows)
    headers = [
        "model (after stage)",
        f"{split} accuracy",
        f"{split} macro-F1",
        "latency b=1 p50 (95% CI) / p95",
        "latency b=32 p50 (95% CI) / p95",
        "params",
        "size",
        "FLOPs / example",
        "energy / 1k inf.",
        "CO2e op. / 1k inf.",
        "CO2e emb. / 1k inf.",
        "stage energy",
        "stage CO2e op. + emb.",
    ]
    body = []
    for r in rows:
        m = r.metrics

        def latency(batch: str, m: Mapping[str, Any] = m) -> str:
            p50 = number(m.get(f"latency_{batch}_p50_ms"))
            p95 = number(m.get(f"latency_{batch}_p95_ms"))
            if p50 is None:
                return "-"
            return f"{p50:.3g}{fmt_interval(m, batch)} / {fmt_ms(p95)}"

        body.append(
            [
                r.label,
                fmt_pct(number(m.get(f"{split}_accuracy"))),
                fmt_pct(number(m.get(f"{split}_macro_f1"))),
                latency("b1"),
                latency("b32"),
                fmt_num(number(m.get("params"))),
                fmt_bytes(number(m.get("size_bytes"))),
                fmt_num(number(m.get("flops_per_example"))),
                *cost_cells(r, "per1k"),
            ]
        )
    return headers, body
