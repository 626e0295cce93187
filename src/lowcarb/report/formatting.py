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


def fmt_g(grams: float | None) -> str:
    if grams is None:
        return "-"
    a = abs(grams)
    if a >= 1000:
        return f"{grams / 1000:.3g} kg"
    if a >= 1 or a == 0:
        return f"{grams:.3g} g"
    if a >= 1e-3:
        return f"{grams * 1e3:.3g} mg"
    return f"{grams * 1e6:.3g} µg"


def fmt_j(joules: float | None) -> str:
    if joules is None:
        return "-"
    a = abs(joules)
    if a >= 3.6e6:
        return f"{joules / 3.6e6:.3g} kWh"
    if a >= 1000:
        return f"{joules / 1000:.3g} kJ"
    if a >= 1 or a == 0:
        return f"{joules:.3g} J"
    return f"{joules * 1000:.3g} mJ"


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
    if n is None:
        return "-"
    if abs(n) >= 1e9:
        return f"{n / 1e9:.{digits}g} G"
    if abs(n) >= 1e6:
        return f"{n / 1e6:.{digits}g} M"
    if abs(n) >= 1e3:
        return f"{n / 1e3:.{digits}g} k"
    return f"{n:.{digits}g}"


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
