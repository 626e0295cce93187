"""Exports of the run store: JSON (everything) and CSV with CodeCarbon 3.x's emissions.csv columns.

The CSV starts with the 38 columns CodeCarbon 3.3.2 writes, same names, order and units, computed
as CodeCarbon computes them, so dashboards built for CodeCarbon read lowcarb's runs:

- energies (`cpu_energy`, `gpu_energy`, `ram_energy`, `energy_consumed`) in kWh with the PUE
  applied (CodeCarbon multiplies every energy and power by its PUE); powers in W, the window's mean;
- `emissions` in kg CO2e: `energy_consumed` x grid intensity, lowcarb's operational CO2e;
- `ram_total_size` in GiB (2**30 bytes), as CodeCarbon; `tracking_mode` "process": the figures
  are the tracked process tree's, and so are `cpu_utilization_percent` (its CPU time over the
  machine's capacity), `ram_used_gb` (its mean resident memory, GiB) and `ram_utilization_percent`;
- `water_consumed` 0 and `wue` 0: lowcarb does not account for water (CodeCarbon's default, wue 0);
- `timestamp` is the window's end in local time, like CodeCarbon's.

Then lowcarb's own columns (embodied emissions, of which GPUs, total emissions, IT energy without
PUE, window names and ids, methods). One row per top-level window by default, so every column sums to the run's total;
`all_windows=True` adds the nested windows, whose `parent_window_id` names their parent.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import TYPE_CHECKING, Any

from lowcarb.measure.footprint import J_PER_KWH
from lowcarb.measure.grid import lookup_region

if TYPE_CHECKING:
    from lowcarb.store.records import RunRecord
    from lowcarb.store.runstore import RunStore

# CodeCarbon 3.3.2's EmissionsData fields, in order: the header of its emissions.csv.
CODECARBON_COLUMNS = [
    "timestamp",
    "project_name",
    "run_id",
    "experiment_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "water_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "os",
    "python_version",
    "codecarbon_version",
    "cpu_count",
    "cpu_model",
    "gpu_count",
    "gpu_model",
    "longitude",
    "latitude",
    "ram_total_size",
    "tracking_mode",
    "cpu_utilization_percent",
    "gpu_utilization_percent",
    "ram_utilization_percent",
    "ram_used_gb",
    "on_cloud",
    "pue",
    "wue",
]
LOWCARB_COLUMNS = [
    "embodied_emissions",
    "gpu_embodied_emissions",
    "total_emissions",
    "it_energy_consumed",
    "window_name",
    "window_id",
    "parent_window_id",
    "run_kind",
    "job_id",
    "cpu_method",
    "gpu_method",
    "ram_method",
    "intensity_g_per_kwh",
    "intensity_source",
    "embodied_detail",
    "unit",
    "units",
    "emissions_per_unit",
]
CSV_COLUMNS = CODECARBON_COLUMNS + LOWCARB_COLUMNS
GIB = 2**30


def _runs(store: RunStore, run_ids: list[str] | None) -> list[str]:
    if run_ids:
        return [store.resolve_id(r) for r in run_ids]
    return [r.run_id for r in store.iter_runs()]


def to_json(store: RunStore, run_ids: list[str] | None = None) -> str:
    out = []
    for run_id in _runs(store, run_ids):
        out.append(
            {
                **store.get_run(run_id).to_dict(),
                "machine": store.machine(run_id),
                "processes": store.processes(run_id),
                "totals": store.run_totals(run_id),
                "footprints": store.footprints(run_id),
                "stage_results": store.stage_results(run_id),
            }
        )
    return json.dumps({"runs": out}, indent=2, default=str) + "\n"


def _place(region: str | None) -> dict[str, str]:
    if not region:
        return {}
    try:
        g = lookup_region(region)
    except ValueError:
        return {"region": region}
    if g.kind == "cloud":
        return {
            "country_name": g.name.rsplit(", ", 1)[-1],
            "country_iso_code": g.iso3,
            "region": g.key,
            "cloud_provider": g.provider,
            "cloud_region": g.cloud_region,
            "on_cloud": "Y",
        }
    return {"country_name": g.name, "country_iso_code": g.iso3, "region": g.key}


def _ram_total_gib(machine: dict[str, Any]) -> float | str:
    if machine.get("ram_total_bytes"):
        return machine["ram_total_bytes"] / GIB
    if machine.get("ram_total_size_gb"):  # runs stored by lowcarb 0.1 kept GB only
        return machine["ram_total_size_gb"] * 1e9 / GIB
    return ""


def _energy_columns(fp: dict[str, Any]) -> dict[str, Any]:
    """CodeCarbon's energy, power and emissions columns: PUE applied to energy and power."""
    duration = float(fp["duration_s"])
    comps = fp.get("components", {})
    pue = float(fp.get("pue", 1.0))
    out: dict[str, Any] = {}
    for c in ("cpu", "gpu", "ram"):
        energy_j = comps[c]["energy_j"] * pue if c in comps else 0.0
        out[f"{c}_energy"] = energy_j / J_PER_KWH
        out[f"{c}_power"] = energy_j / duration if duration > 0 else 0.0
    emissions_kg = fp["operational_g"] / 1000.0  # = energy_consumed x intensity
    out.update(
        duration=duration,
        energy_consumed=fp["energy_j"] * pue / J_PER_KWH,
        emissions=emissions_kg,
        emissions_rate=emissions_kg / duration if duration > 0 else 0.0,
        water_consumed=0.0,
        pue=pue,
        wue=0.0,
    )
    return out


def _usage_columns(fp: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    duration, cpus = float(fp["duration_s"]), machine.get("cpu_count") or 0
    busy = fp.get("cpu_time_s", 0.0) / (duration * cpus) * 100 if duration > 0 and cpus else ""
    ram_gib, total = fp.get("rss_gib_mean"), _ram_total_gib(machine)
    return {
        "cpu_utilization_percent": busy,
        "gpu_utilization_percent": 0.0 if "gpu" not in fp.get("components", {}) else "",
        "ram_used_gb": ram_gib if ram_gib is not None else "",
        "ram_utilization_percent": ram_gib / total * 100 if ram_gib is not None and total else "",
    }


def _row(run: RunRecord, machine: dict[str, Any], fp: dict[str, Any]) -> dict[str, Any]:
    comps = fp.get("components", {})
    started = dt.datetime.fromisoformat(fp["started_at"]) if fp.get("started_at") else None
    ended = started + dt.timedelta(seconds=float(fp["duration_s"])) if started else None
    row: dict[str, Any] = {
        "timestamp": ended.astimezone().strftime("%Y-%m-%dT%H:%M:%S") if ended else "",
        "project_name": run.name,
        "run_id": run.run_id,
        "experiment_id": "",
        **_energy_columns(fp),
        "country_name": "",
        "country_iso_code": "",
        "region": "",
        "cloud_provider": "",
        "cloud_region": "",
        "os": machine.get("os", ""),
        "python_version": machine.get("python_version", ""),
        "codecarbon_version": "",
        "cpu_count": machine.get("cpu_count", ""),
        "cpu_model": machine.get("cpu_model", ""),
        "gpu_count": machine.get("gpu_count", 0),
        "gpu_model": machine.get("gpu_model", ""),
        "longitude": "",
        "latitude": "",
        "ram_total_size": _ram_total_gib(machine),
        "tracking_mode": "process",
        **_usage_columns(fp, machine),
        "on_cloud": "N",
        "embodied_emissions": fp["embodied_g"] / 1000.0,  # server and GPUs
        "gpu_embodied_emissions": (fp.get("gpu_embodied_g") or 0.0) / 1000.0,
        "total_emissions": fp["total_g"] / 1000.0,
        "it_energy_consumed": fp["energy_j"] / J_PER_KWH,
        "window_name": fp["name"],
        "window_id": fp["id"],
        "parent_window_id": fp.get("parent") or "",
        "run_kind": run.kind,
        "job_id": run.job_id or "",
        "cpu_method": comps.get("cpu", {}).get("method", ""),
        "gpu_method": comps.get("gpu", {}).get("method", ""),
        "ram_method": comps.get("ram", {}).get("method", ""),
        "intensity_g_per_kwh": fp.get("intensity_g_per_kwh", ""),
        "intensity_source": fp.get("intensity_source", ""),
        "embodied_detail": fp.get("embodied_detail", ""),
        "unit": fp.get("unit") or "",
        "units": fp.get("units") if fp.get("units") is not None else "",
        "emissions_per_unit": fp["g_per_unit"] / 1000.0 if fp.get("g_per_unit") else "",
    }
    row.update(_place(fp.get("region")))
    return row


def to_csv(store: RunStore, run_ids: list[str] | None = None, *, all_windows: bool = False) -> str:
    """CodeCarbon's columns then lowcarb's; top-level windows only unless `all_windows`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for run_id in _runs(store, run_ids):
        run = store.get_run(run_id)
        machine = store.machine(run_id)
        fps = store.footprints(run_id)
        ids = {f["id"] for f in fps}
        for fp in fps:
            if all_windows or fp.get("parent") not in ids:
                writer.writerow(_row(run, machine, fp))
    return buf.getvalue()
