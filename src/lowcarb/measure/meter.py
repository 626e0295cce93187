"""The Protocol every meter follows, and the choice of meters for a window."""

from __future__ import annotations

from typing import Protocol

from lowcarb.measure.footprint import ComponentEnergy
from lowcarb.measure.probes import Tick


class Meter(Protocol):
    """start(tick) at window open, sample(tick) on every sampler tick, stop(tick) at close."""

    def start(self, tick: Tick) -> None: ...

    def sample(self, tick: Tick) -> None: ...

    def stop(self, tick: Tick) -> dict[str, ComponentEnergy]: ...


def cpu_share(d_tree_cpu_s: float, d_machine_cpu_s: float) -> float:
    """Share of machine-level energy attributed to the tracked tree over one interval.

    Two tracked process trees on one machine then split a machine counter instead of both
    claiming all of it. Clamped to [0, 1]: CPU-time counters tick at different granularities.
    """
    if d_machine_cpu_s <= 0:
        return 1.0 if d_tree_cpu_s > 0 else 0.0
    return min(1.0, max(0.0, d_tree_cpu_s / d_machine_cpu_s))
