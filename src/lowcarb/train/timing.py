"""Clock reads that see the device's work done, and repeated timings with a bounded spread.

    clock = DeviceClock(device)
    t0 = clock.now(); model(**inputs); elapsed_s = clock.now() - t0     # GPU work included

    timings = time_repeats(lambda: model(**inputs), device, RepeatConfig())
    timings.p50_ms, timings.p50_low_ms, timings.p50_high_ms, timings.load.busy

A GPU runs its work after the Python call that queued it has returned, so a clock read straight
after the call measures the queueing, not the work: `DeviceClock.now()` synchronizes the device
first (a no-op on the CPU). `time_repeats` repeats a call until the median's confidence interval
is narrow enough (or a time budget is spent), and records the machine's load while it timed: on a
shared machine a figure measured under load is slower, and the record says so.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from lowcarb.train.device import synchronize

# z for the normal approximation of the binomial behind the median's order-statistic interval.
_Z = {0.9: 1.6449, 0.95: 1.9600, 0.99: 2.5758}


class DeviceClock:
    """`time.perf_counter()` after the device has finished its queued work."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)

    def now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()


def median_interval(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: order statistics j and k with
    j, k = n/2 -+ z sqrt(n)/2 (normal approximation of Binomial(n, 1/2); timings are skewed,
    so no mean-and-standard-deviation interval). Up to 9 samples it is the whole range."""
    if not samples:
        raise ValueError("median_interval of no samples is undefined")
    if confidence not in _Z:
        raise ValueError(f"confidence must be one of {sorted(_Z)}, got {confidence}")
    xs = sorted(samples)
    n = len(xs)
    half = _Z[confidence] * math.sqrt(n) / 2.0
    lo = max(0, math.floor(n / 2.0 - half) - 1)  # 1-based rank -> 0-based index
    hi = min(n - 1, math.ceil(n / 2.0 + half))
    return xs[lo], xs[hi]


@dataclass(frozen=True)
class MachineLoad:
    """The 1-minute load average against the cores this process may run on. Load above the
    cores means runnable work waits for a core: timings taken then are inflated."""

    load_1m: float | None  # None where the OS has no load average (Windows)
    cores: int

    @property
    def busy(self) -> bool:
        return self.load_1m is not None and self.load_1m > self.cores

    def to_dict(self) -> dict[str, Any]:
        return {"load_1m": self.load_1m, "cores": self.cores, "busy": self.busy}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows): every core
        return os.cpu_count() or 1


def machine_load() -> MachineLoad:
    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this OS
        load = None
    return MachineLoad(load, usable_cores())


def busy_warning(load: MachineLoad, what: str = "timings") -> str | None:
    """The line to show when `load` says the machine was busy, else None."""
    if not load.busy:
        return None
    return (
        f"the machine was busy while measuring {what} (load average {load.load_1m:.1f} on "
        f"{load.cores} core(s)): figures are inflated; rerun on a quiet machine to compare them"
    )


@dataclass(frozen=True)
class RepeatConfig:
    """How long to time: after `warmup` untimed calls, repeat until the median's `confidence`
    interval is within +-`rel_ci` of the median (checked from `min_repeats` on), or `budget_s`
    seconds of timing are spent (at least 3 repeats), or `max_repeats` calls are timed."""

    warmup: int = 3
    min_repeats: int = 10
    max_repeats: int = 1000
    budget_s: float = 5.0
    rel_ci: float = 0.03
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not 1 <= self.min_repeats <= self.max_repeats:
            raise ValueError(
                f"repeats must satisfy 1 <= min_repeats <= max_repeats, got {self.min_repeats} "
                f"and {self.max_repeats}"
            )
        if not self.budget_s > 0:
            raise ValueError(f"budget_s must be > 0, got {self.budget_s}")
        if not self.rel_ci > 0:
            raise ValueError(f"rel_ci must be > 0, got {self.rel_ci}")
        if self.confidence not in _Z:
            raise ValueError(f"confidence must be one of {sorted(_Z)}, got {self.confidence}")

    @classmethod
    def fixed(cls, repeats: int, warmup: int = 3) -> RepeatConfig:
        """Exactly `repeats` timed calls, no budget (side-by-side benchmarks that alternate arms)."""
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        return cls(warmup=warmup, min_repeats=repeats, max_repeats=repeats, budget_s=math.inf)


@dataclass(frozen=True)
class Timings:
    """Repeated timings of one call, in milliseconds, with the interval of the median."""

    samples_ms: tuple[float, ...]
    p50_ms: float
    p95_ms: float
    mean_ms: float
    p50_low_ms: float
    p50_high_ms: float
    stop_reason: str  # "converged", "budget" or "max_repeats"
    warmup: int
    load: MachineLoad
    device: str

    @property
    def repeats(self) -> int:
        return len(self.samples_ms)

    @property
    def p50_rel_ci(self) -> float:
        """Half-width of the median's interval relative to the median."""
        return (self.p50_high_ms - self.p50_low_ms) / 2.0 / self.p50_ms if self.p50_ms > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["samples_ms"]
        out["load"] = self.load.to_dict()
        out["repeats"] = self.repeats
        out["p50_rel_ci"] = self.p50_rel_ci
        return out


def _percentile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def _converged(samples: list[float], config: RepeatConfig) -> bool:
    lo, hi = median_interval(samples, config.confidence)
    mid = statistics.median(samples)
    return mid > 0 and (hi - lo) / 2.0 <= config.rel_ci * mid


def time_repeats(
    fn: Callable[[], Any], device: torch.device | str, config: RepeatConfig | None = None
) -> Timings:
    """Time `fn()` on `device` (synchronized before every clock read) as `config` says."""
    cfg = config or RepeatConfig()
    clock = DeviceClock(device)
    load_before = machine_load()
    for _ in range(cfg.warmup):
        fn()
    samples: list[float] = []
    start = clock.now()
    reason = "max_repeats"
    while len(samples) < cfg.max_repeats:
        t0 = clock.now()
        fn()
        t1 = clock.now()
        samples.append((t1 - t0) * 1000.0)
        n = len(samples)
        # Checking every few repeats keeps the sort out of the loop's cost for tiny models.
        if n >= cfg.min_repeats and (n - cfg.min_repeats) % 5 == 0 and _converged(samples, cfg):
            reason = "converged"
            break
        if n >= 3 and t1 - start >= cfg.budget_s and n < cfg.max_repeats:
            reason = "budget"
            break
    load_after = machine_load()
    # The busier of the two reads: a load that rose while timing inflated the figures too.
    loads = [x for x in (load_before.load_1m, load_after.load_1m) if x is not None]
    load = MachineLoad(max(loads) if loads else None, load_after.cores)
    xs = sorted(samples)
    lo, hi = median_interval(xs, cfg.confidence)
    return Timings(
        samples_ms=tuple(samples),
        p50_ms=_percentile(xs, 0.5),
        p95_ms=_percentile(xs, 0.95),
        mean_ms=statistics.fmean(xs),
        p50_low_ms=lo,
        p50_high_ms=hi,
        stop_reason=reason,
        warmup=cfg.warmup,
        load=load,
        device=str(clock.device),
    )
