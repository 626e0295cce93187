"""Exports of the run store: JSON (everything) and CSV with CodeCarbon's emissions.csv columns.

One CSV row per ledger window. CodeCarbon's columns keep CodeCarbon's units (duration in s,
emissions in kg CO2e, energy in kWh, power in W), so dashboards built for CodeCarbon read our
runs. `emissions` is the operational CO2e (energy x intensity x PUE), like CodeCarbon's; lowcarb's
extra columns come after CodeCarbon's: embodied and total emissions, window names and methods.
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
    from lowcarb.store.runstore import RunStore

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
    "on_cloud",
    "pue",
]
LOWCARB_COLUMNS = [
    "embodied_emissions",
    "gpu_embodied_emissions",
    "total_emissions",
    "window_name",
    "window_id",
    "parent_window_id",
    "run_kind",
    "cpu_method",
    "gpu_method",
    "ram_method",
    "intensity_g_per_kwh",
    "intensity_source",
    "unit",
    "units",
    "emissions_per_unit",
]
CSV_COLUMNS = CODECARBON_COLUMNS + LOWCARB_COLUMNS


def _runs(store: RunStore, run_ids: list[str] | None) -> list[str]:
    if run_ids:
        return [store.resolve_id(r) for r in run_ids]
    return [r.run_id for r in reversed(store.list_runs(limit=1_000_000))]


def to_json(store: RunStore, run_ids: list[str] | None = None) -> str:
    out = []
    for run_id in _runs(store, run_ids):
        out.append(
            {
                **store.get_run(run_id).to_dict(),
                "machine": store.machine(run_id),
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
            "country_iso_code": g.iso3,
            "region": g.key,
            "cloud_provider": g.provider,
            "cloud_region": g.cloud_region,
            "on_cloud": "Y",
        }
    return {"country_name": g.name, "country_iso_code": g.iso3, "region": g.key}


def _row(run: Any, machine: dict[str, Any], fp: dict[str, Any]) -> dict[str, Any]:
    duration = float(fp["duration_s"])
    comps = fp.get("components", {})

    def kwh(c: str) -> float:
        return comps[c]["energy_j"] / J_PER_KWH if c in comps else 0.0

    def watts(c: str) -> float:
        return comps[c]["energy_j"] / duration if c in comps and duration > 0 else 0.0

    started = dt.datetime.fromisoformat(fp["started_at"]) if fp.get("started_at") else None
    ended = started + dt.timedelta(seconds=duration) if started else None
    emissions_kg = fp["operational_g"] / 1000.0
    row: dict[str, Any] = {
        "timestamp": ended.strftime("%Y-%m-%dT%H:%M:%S") if ended else "",
        "project_name": run.name,
        "run_id": run.run_id,
        "experiment_id": "",
        "duration": duration,
        "emissions": emissions_kg,
        "emissions_rate": emissions_kg / duration if duration > 0 else 0.0,
        "cpu_power": watts("cpu"),
        "gpu_power": watts("gpu"),
        "ram_power": watts("ram"),
        "cpu_energy": kwh("cpu"),
        "gpu_energy": kwh("gpu"),
        "ram_energy": kwh("ram"),
        "energy_consumed": fp["energy_j"] / J_PER_KWH,
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
        "gpu_count": "",
        "gpu_model": "",
        "longitude": "",
        "latitude": "",
        "ram_total_size": machine.get("ram_total_size_gb", ""),
        "tracking_mode": "process",
        "on_cloud": "N",
        "pue": fp["pue"],
        "embodied_emissions": fp["embodied_g"] / 1000.0,  # server and GPUs
        "gpu_embodied_emissions": (fp.get("gpu_embodied_g") or 0.0) / 1000.0,
        "total_emissions": fp["total_g"] / 1000.0,
        "window_name": fp["name"],
        "window_id": fp["id"],
        "parent_window_id": fp.get("parent") or "",
        "run_kind": run.kind,
        "cpu_method": comps.get("cpu", {}).get("method", ""),
        "gpu_method": comps.get("gpu", {}).get("method", ""),
        "ram_method": comps.get("ram", {}).get("method", ""),
        "intensity_g_per_kwh": fp["intensity_g_per_kwh"],
        "intensity_source": fp["intensity_source"],
        "unit": fp.get("unit") or "",
        "units": fp.get("units") if fp.get("units") is not None else "",
        "emissions_per_unit": fp["g_per_unit"] / 1000.0 if fp.get("g_per_unit") else "",
    }
    row.update(_place(fp.get("region")))
    return row


def to_csv(store: RunStore, run_ids: list[str] | None = None) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for run_id in _runs(store, run_ids):
        run = store.get_run(run_id)
        machine = store.machine(run_id)
        for fp in store.footprints(run_id):
            writer.writerow(_row(run, machine, fp))
    return buf.getvalue()
