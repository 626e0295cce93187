"""lowcarb: make AI models cheaper to build and to run, and prove it in joules and grams of CO2e.

`lowcarb.track` is `lowcarb.measure.track` with every footprint saved in the run store
(`RunStore.default()`, unless LOWCARB_NO_STORE=1).
"""

from lowcarb.measure import CarbonConfig, Footprint, HardwareProfile, load_carbon_config
from lowcarb.store.tracked import track, use_run

__version__ = "0.1.0"

__all__ = [
    "CarbonConfig",
    "Footprint",
    "HardwareProfile",
    "__version__",
    "load_carbon_config",
    "track",
    "use_run",
]
