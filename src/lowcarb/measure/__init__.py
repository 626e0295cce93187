"""The carbon ledger: energy per component, operational and embodied CO2e, per window and unit.

`measure` is the ground floor: it imports nothing else of lowcarb.
"""

from lowcarb.measure.config import (
    DEFAULT_CPU_W_PER_CORE,
    DEFAULT_PUE,
    DEFAULT_RAM_W_PER_GB,
    CarbonConfig,
    HardwareProfile,
    load_carbon_config,
)
from lowcarb.measure.embodied import embodied_g
from lowcarb.measure.footprint import ComponentEnergy, Footprint
from lowcarb.measure.grid import GridRegion, lookup_region, search_regions
from lowcarb.measure.reservation import Reservation, SharePolicy, detect_reservation
from lowcarb.measure.tracker import Window, current_window_id, track

__all__ = [
    "DEFAULT_CPU_W_PER_CORE",
    "DEFAULT_PUE",
    "DEFAULT_RAM_W_PER_GB",
    "CarbonConfig",
    "ComponentEnergy",
    "Footprint",
    "GridRegion",
    "HardwareProfile",
    "Reservation",
    "SharePolicy",
    "Window",
    "current_window_id",
    "detect_reservation",
    "embodied_g",
    "load_carbon_config",
    "lookup_region",
    "search_regions",
    "track",
]
