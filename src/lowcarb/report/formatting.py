"""Numbers as the HTML, markdown and terminal reports print them ("-" where there is none)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def number(value: Any) -> float | None:
    """A stored metric as a float; None for a missing, boolean or non-numeric value."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# (size, unit) rungs, largest first: a value is shown in the unit of the first size its magnitude
# reaches; the last rung takes everything smaller, and zero shows in the unit of size 1.
_GRAMS = ((1000.0, " kg"), (1.0, " g"), (1e-3, " mg"), (1e-6, " µg"))
_JOULES = ((3.6e6, " kWh"), (1000.0, " kJ"), (1.0, " J"), (1e-3, " mJ"))
_MAGNITUDES = ((1e9, " G"), (1e6, " M"), (1e3, " k"), (1.0, ""))


def _on_scale(value: float, rungs: tuple[tuple[float, str], ...], digits: int = 3) -> str:
    a = abs(value)
    size, unit = next(
        ((size, unit) for size, unit in rungs if a >= size or (a == 0 and size == 1)), rungs[-1]
    )
    # Below 1 multiply by a whole factor (1000, not / 1e-3): the same rounding as "x * 1e3".
    scaled = value / size if size >= 1 else value * round(1 / size)
    return f"{scaled:.{digits}g}{unit}"


def fmt_g(grams: float | None) -> str:
    return "-" if grams is None else _on_scale(grams, _GRAMS)


def fmt_j(joules: float | None) -> str:
    return "-" if joules is None else _on_scale(joules, _JOULES)


def fmt_count(n: float | None) -> str:
    if n is None:
        return "never"
    if n >= 1e9:
        return f"{n / 1e9:.3g} billion"
    if n >= 1e6:
        return f"{n / 1e6:.3g} million"
    if n >= 1e3:
        return f"{n / 1e3:.3g} thousand"
    return f"{n:.0f}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def fmt_num(n: float | None, digits: int = 3) -> str:
    return "-" if n is None else _on_scale(n, _MAGNITUDES, digits)


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}%"


def fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g} ms"


def fmt_interval(metrics: Mapping[str, Any], batch: str) -> str:
    """" +-2.1%": half the median's 95 % interval, relative to it ("" when not recorded)."""
    p50 = number(metrics.get(f"latency_{batch}_p50_ms"))
    low = number(metrics.get(f"latency_{batch}_p50_low_ms"))
    high = number(metrics.get(f"latency_{batch}_p50_high_ms"))
    if p50 is None or low is None or high is None or p50 <= 0:
        return ""
    return f" ±{(high - low) / 2 / p50 * 100:.1f}%"
