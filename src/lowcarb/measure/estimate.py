"""Estimates where no counter exists: CPU from CPU time x power per core, RAM from resident memory.

CPU: energy_j = (CPU seconds of the tracked tree) x (W per busy logical CPU). The power per core is
cpu_power_w / logical CPUs when the user sets cpu_power_w, else DEFAULT_CPU_W_PER_CORE (4.0 W).
RAM: energy_j = integral of (resident GB of the tree) x W per GB (0.392 W/GB), trapezoid rule.
"""

from __future__ import annotations

from lowcarb.measure.footprint import ComponentEnergy
from lowcarb.measure.integrate import PowerIntegrator
from lowcarb.measure.probes import Tick

BYTES_PER_GB = 1e9


class CpuTimeEstimateMeter:
    def __init__(self, w_per_core: float, detail: str = "") -> None:
        if w_per_core <= 0:
            raise ValueError(f"CPU power per core must be > 0 W, got {w_per_core}")
        self.w_per_core = w_per_core
        self.detail = detail
        self._start_cpu_s = 0.0

    def start(self, tick: Tick) -> None:
        self._start_cpu_s = tick.tree_cpu_s

    def sample(self, tick: Tick) -> None:
        pass  # CPU time is cumulative: start and stop readings suffice

    def stop(self, tick: Tick) -> dict[str, ComponentEnergy]:
        cpu_s = max(0.0, tick.tree_cpu_s - self._start_cpu_s)
        return {
            "cpu": ComponentEnergy(
                cpu_s * self.w_per_core,
                f"estimated: cpu-time x {self.w_per_core:g} W/core",
                self.detail,
            )
        }


class RamEstimateMeter:
    def __init__(self, w_per_gb: float, detail: str = "") -> None:
        if w_per_gb < 0:
            raise ValueError(f"RAM power must be >= 0 W/GB, got {w_per_gb}")
        self.w_per_gb = w_per_gb
        self.detail = detail
        self._integrator = PowerIntegrator()

    def _add(self, tick: Tick) -> None:
        self._integrator.add(tick.t_s, tick.rss_bytes / BYTES_PER_GB * self.w_per_gb)

    start = _add
    sample = _add

    def stop(self, tick: Tick) -> dict[str, ComponentEnergy]:
        self._add(tick)
        return {
            "ram": ComponentEnergy(
                self._integrator.energy_j,
                f"estimated: resident memory x {self.w_per_gb:g} W/GB",
                self.detail,
            )
        }
