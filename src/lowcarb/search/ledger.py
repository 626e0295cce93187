"""Where a search's ledger windows go: the carbon settings they measure with, and the callback
that stores each finished top-level window (the footprints of a stored search run).

    ledger = SearchLedger(carbon=run.carbon, on_close=run.on_close)
    with ledger.window("parsec:search", unit="architecture") as fp:     # stored with the run
        with ledger.part("parsec:retrain 0") as part_fp:                  # nested: measured only
            ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lowcarb.measure import CarbonConfig, Footprint, track
from lowcarb.measure.tracker import Window


@dataclass(frozen=True)
class SearchLedger:
    """carbon: the recipe's resolved carbon settings (None: environment, lowcarb.toml, defaults).
    on_close: called with each top-level window's Footprint when it closes (None: not stored)."""

    carbon: CarbonConfig | None = None
    on_close: Callable[[Footprint], None] | None = None

    def window(self, name: str, *, unit: str | None = None, units: float | None = None) -> Window:
        """A top-level window of the search: measured and handed to `on_close`."""
        return track(name, unit=unit, units=units, config=self.carbon, on_close=self.on_close)

    def part(self, name: str, *, unit: str | None = None, units: float | None = None) -> Window:
        """A window nested in a top-level one (one trial's share): measured, not stored apart,
        so the run's total counts its energy once."""
        return track(name, unit=unit, units=units, config=self.carbon)
