"""Embodied emissions, ISO/IEC 21031 (SCI): M = TE x (TiR / EL) x (RR / ToR)."""

from __future__ import annotations

SECONDS_PER_YEAR = 365.25 * 24 * 3600


def embodied_g(
    embodied_kg: float, lifetime_years: float, duration_s: float, resource_share: float
) -> float:
    """Grams CO2e of manufacturing attributed to `duration_s` of `resource_share` of a machine.

    TE = embodied_kg (kgCO2e), EL = lifetime_years, TiR = duration_s, RR/ToR = resource_share.
    Example: 1000 kg, 4 years, 1 hour, full share -> 1e6 g x 3600 / 126,230,400 = 28.5 g.
    """
    if duration_s < 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    if lifetime_years <= 0:
        raise ValueError(f"lifetime_years must be > 0, got {lifetime_years}")
    if not 0 <= resource_share <= 1:
        raise ValueError(f"resource_share must be in [0, 1], got {resource_share}")
    return embodied_kg * 1000.0 * (duration_s / (lifetime_years * SECONDS_PER_YEAR)) * resource_share
