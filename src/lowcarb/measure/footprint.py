"""The Footprint of one ledger window: energy per component, operational and embodied CO2e."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from lowcarb.errors import ConfigError

J_PER_KWH = 3.6e6


def check_units(units: Any) -> float:
    """A count of functional units: a finite number >= 0 (bools, NaN and infinity rejected)."""
    if isinstance(units, bool) or not isinstance(units, (int, float)):
        raise ConfigError(f"units must be a number (how many units the work processed), got {units!r}")
    if not math.isfinite(units) or units < 0:
        raise ConfigError(f"units must be >= 0 and finite (a count of units), got {units!r}")
    return float(units)


@dataclass(frozen=True)
class ComponentEnergy:
    """Energy of one component ("cpu", "gpu", "ram") and how it was obtained.

    method starts with "measured:" (a hardware counter) or "estimated:" (a model); detail says
    why a fallback was taken (for example "rapl: permission denied on ..."). incomplete, when not
    empty, says which part of the window's energy could not be read and why (the figure is then a
    lower bound).
    """

    energy_j: float
    method: str
    detail: str = ""
    incomplete: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ComponentEnergy:
        return cls(
            float(d["energy_j"]),
            str(d["method"]),
            str(d.get("detail", "")),
            str(d.get("incomplete") or ""),
        )


@dataclass
class Footprint:
    """One window of the ledger. Filled when the window closes; `units` may be set inside it.

    operational_g = energy_j / 3.6e6 (kWh) x intensity_g_per_kwh x pue
    embodied_g    = TE x (duration / lifetime) x share       (ISO/IEC 21031 SCI, M term)
                    summed over the server and the GPUs used; gpu_embodied_g is the GPUs' part
                    (per GPU: its TE x the tree's GPU-seconds on it / its lifetime).
    """

    name: str
    id: str
    parent: str | None = None
    started_at: str = ""  # ISO 8601, UTC
    duration_s: float = 0.0
    components: dict[str, ComponentEnergy] = field(default_factory=dict)
    intensity_g_per_kwh: float = 0.0
    intensity_source: str = ""
    region: str | None = None
    pue: float = 1.0
    embodied_g: float = 0.0
    embodied_detail: str = ""
    gpu_embodied_g: float = 0.0  # the GPUs' part of embodied_g
    gpu_embodied_detail: str = ""
    cpu_time_s: float = 0.0  # CPU time of the tracked process tree (what the estimate scales)
    rss_gib_mean: float | None = None  # resident memory of the tracked tree, mean over the window
    unit: str | None = None
    units: float | None = None
    closed: bool = False
    error: str | None = None  # the exception that ended the window, if any

    def __setattr__(self, name: str, value: Any) -> None:
        # `fp.units = n` is set by user code inside the window: check it where it is set.
        if name == "units" and value is not None:
            value = check_units(value)
        super().__setattr__(name, value)

    @property
    def energy_j(self) -> float:
        return sum(c.energy_j for c in self.components.values())

    @property
    def energy_kwh(self) -> float:
        return self.energy_j / J_PER_KWH

    @property
    def operational_g(self) -> float:
        return self.energy_kwh * self.intensity_g_per_kwh * self.pue

    @property
    def server_embodied_g(self) -> float:
        return self.embodied_g - self.gpu_embodied_g

    @property
    def total_g(self) -> float:
        return self.operational_g + self.embodied_g

    @property
    def g_per_unit(self) -> float | None:
        if not self.units:
            return None
        return self.total_g / self.units

    @property
    def j_per_unit(self) -> float | None:
        if not self.units:
            return None
        return self.energy_j / self.units

    @property
    def methods(self) -> dict[str, str]:
        return {k: c.method for k, c in self.components.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "parent": self.parent,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "components": {k: c.to_dict() for k, c in self.components.items()},
            "energy_j": self.energy_j,
            "intensity_g_per_kwh": self.intensity_g_per_kwh,
            "intensity_source": self.intensity_source,
            "region": self.region,
            "pue": self.pue,
            "operational_g": self.operational_g,
            "embodied_g": self.embodied_g,
            "embodied_detail": self.embodied_detail,
            "gpu_embodied_g": self.gpu_embodied_g,
            "gpu_embodied_detail": self.gpu_embodied_detail,
            "total_g": self.total_g,
            "cpu_time_s": self.cpu_time_s,
            "rss_gib_mean": self.rss_gib_mean,
            "unit": self.unit,
            "units": self.units,
            "g_per_unit": self.g_per_unit,
            "j_per_unit": self.j_per_unit,
            "closed": self.closed,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Footprint:
        """Inverse of to_dict; derived figures (energy_j, operational_g, ...) are recomputed."""
        return cls(
            name=d["name"],
            id=d["id"],
            parent=d.get("parent"),
            started_at=d.get("started_at", ""),
            duration_s=float(d.get("duration_s", 0.0)),
            components={
                k: ComponentEnergy.from_dict(v) for k, v in (d.get("components") or {}).items()
            },
            intensity_g_per_kwh=float(d.get("intensity_g_per_kwh", 0.0)),
            intensity_source=d.get("intensity_source", ""),
            region=d.get("region"),
            pue=float(d.get("pue", 1.0)),
            embodied_g=float(d.get("embodied_g", 0.0)),
            embodied_detail=d.get("embodied_detail", ""),
            gpu_embodied_g=float(d.get("gpu_embodied_g") or 0.0),
            gpu_embodied_detail=d.get("gpu_embodied_detail") or "",
            cpu_time_s=float(d.get("cpu_time_s", 0.0)),
            rss_gib_mean=d.get("rss_gib_mean"),
            unit=d.get("unit"),
            units=d.get("units"),
            closed=bool(d.get("closed", True)),
            error=d.get("error"),
        )
