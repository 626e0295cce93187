"""Embodied emissions of the GPUs a window used, apart from the server's (ISO/IEC 21031 SCI, M).

Per GPU: M = TE x (GPU-seconds / lifetime), where GPU-seconds is the tree's share of the GPU summed
over the window's intervals (a sole user for 10 s: 10 GPU-s; one of two equal users: 5 GPU-s), the
same share its energy is charged by. TE and lifetime default to the packaged gpu.csv (Boavizta's
A100 80GB card, 3 years; see tables/ATTRIBUTION.md) and are overridden by `gpu_embodied_kg` and
`gpu_lifetime_years` (CarbonConfig, LOWCARB_GPU_EMBODIED_KG, lowcarb.toml).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

from lowcarb.measure.embodied import embodied_g
from lowcarb.measure.footprint import Footprint
from lowcarb.measure.gpu_meter import GpuUse, uses_of


@lru_cache(maxsize=1)
def gpu_default() -> dict[str, Any]:
    """The packaged default for one GPU card: embodied_kg, lifetime_years, source."""
    text = (resources.files("lowcarb.measure") / "tables" / "gpu.csv").read_text("utf-8")
    row = next(r for r in csv.DictReader(text.splitlines()) if r["gpu"] == "default")
    return {
        "embodied_kg": float(row["embodied_kg"]),
        "lifetime_years": float(row["lifetime_years"]),
        "source": row["source"],
    }


def gpu_embodied(
    uses: Sequence[GpuUse],
    embodied_kg: float | None = None,
    lifetime_years: float | None = None,
) -> tuple[float, str]:
    """(grams CO2e, how it was computed) for the GPU uses of one window; (0, "") for none."""
    uses = [u for u in uses if u.gpu_s > 0]
    if not uses:
        return 0.0, ""
    default = gpu_default()
    kg = default["embodied_kg"] if embodied_kg is None else embodied_kg
    years = default["lifetime_years"] if lifetime_years is None else lifetime_years
    gpu_s = sum(u.gpu_s for u in uses)
    grams = embodied_g(kg, years, gpu_s, 1.0)
    per_gpu = ", ".join(f"{u.name} {u.gpu_s:.1f}" for u in uses)
    source = "configured" if embodied_kg is not None else "default per GPU: " + default["source"]
    return grams, f"{kg:g} kg x {gpu_s:.1f} GPU-s ({per_gpu}) / {years:g} y; {source}"


def add_gpu_embodied(
    fp: Footprint,
    meters: Sequence[object],
    embodied_kg: float | None = None,
    lifetime_years: float | None = None,
) -> None:
    """Charge a closed window its GPUs' embodied emissions: part of embodied_g, shown apart."""
    grams, detail = gpu_embodied(uses_of(meters), embodied_kg, lifetime_years)
    fp.gpu_embodied_g = grams
    fp.gpu_embodied_detail = detail
    fp.embodied_g += grams
