"""Ledger windows: `with track("fine-tune", unit="sample", units=n) as fp:` or `@track("eval")`."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import os
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from lowcarb.measure.config import DEFAULT_RAM_W_PER_GB, CarbonConfig, load_carbon_config
from lowcarb.measure.embodied import embodied_g
from lowcarb.measure.estimate import CpuTimeEstimateMeter, RamEstimateMeter
from lowcarb.measure.footprint import ComponentEnergy, Footprint
from lowcarb.measure.gpu_embodied import add_gpu_embodied
from lowcarb.measure.gpu_meter import NvmlMeter
from lowcarb.measure.integrate import Sampler
from lowcarb.measure.meter import Meter
from lowcarb.measure.nvml import NvmlUnavailable, open_nvml
from lowcarb.measure.probes import Probes, SystemProbes, Tick
from lowcarb.measure.rapl import RaplMeter, RaplUnavailable, discover

# The id of the innermost open window in this context (thread / task): the parent of a new one.
_current_window: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lowcarb_current_window", default=None
)
F = TypeVar("F", bound=Callable[..., Any])


def current_window_id() -> str | None:
    return _current_window.get()


def select_meters(config: CarbonConfig, *, use_nvml: bool = True) -> list[Meter]:
    """Counters where readable, estimates where not; each fallback records why."""
    meters: list[Meter] = []
    provided: set[str] = set()
    try:
        rapl = RaplMeter(discover(config.powercap_root))
        meters.append(rapl)
        provided.update(rapl.components)
        rapl_reason = ""
    except RaplUnavailable as exc:
        rapl_reason = str(exc)
    if "cpu" not in provided:
        meters.append(CpuTimeEstimateMeter(config.cpu_w_per_core(), rapl_reason))
    if "ram" not in provided:
        reason = rapl_reason or "rapl: no dram domain"
        meters.append(RamEstimateMeter(DEFAULT_RAM_W_PER_GB, reason))
    if use_nvml:
        # No GPU: no gpu component at all (nothing to report, nothing to estimate).
        with contextlib.suppress(NvmlUnavailable):
            meters.append(NvmlMeter(open_nvml()))
    return meters


class Window:
    """One ledger window; a context manager yielding its Footprint, and a decorator.

    `probes` and `meters` replace the machine's own (tests script them).
    """

    def __init__(
        self,
        name: str,
        *,
        unit: str | None = None,
        units: float | None = None,
        config: CarbonConfig | None = None,
        pid: int | None = None,
        on_close: Callable[[Footprint], None] | None = None,
        probes: Probes | None = None,
        meters: Sequence[Meter] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a ledger window needs a non-empty name, e.g. track('fine-tune')")
        if units is not None and units < 0:
            raise ValueError(f"units must be >= 0, got {units}")
        self.name = name
        self.unit = unit
        self.units = units
        self.config = config
        self.pid = pid
        self.on_close = on_close
        self._probes = probes
        self._meters = list(meters) if meters is not None else None
        self.footprint: Footprint | None = None

    # -- context manager -----------------------------------------------------------------------
    def __enter__(self) -> Footprint:
        config = self.config if self.config is not None else load_carbon_config()
        self._config = config
        probes = self._probes if self._probes is not None else SystemProbes(self.pid)
        meters = self._meters if self._meters is not None else select_meters(config)
        intensity, source = config.grid()
        fp = Footprint(
            name=self.name,
            id=uuid.uuid4().hex[:12],
            parent=_current_window.get(),
            started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
            intensity_g_per_kwh=intensity,
            intensity_source=source,
            region=config.region if config.intensity_g_per_kwh is None else None,
            pue=config.pue,
            unit=self.unit,
            units=self.units,
        )
        self.footprint = fp
        self._active_probes = probes
        self._active_meters = meters
        self._first = probes.tick()
        for m in meters:
            m.start(self._first)
        self._sampler = Sampler(config.sample_interval_s, self._on_tick)
        self._sampler.start()
        self._token = _current_window.set(fp.id)
        return fp

    def _on_tick(self) -> None:
        tick = self._active_probes.tick()
        for m in self._active_meters:
            m.sample(tick)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        fp = self.footprint
        assert fp is not None
        try:
            self._sampler.stop()
        except RuntimeError as err:
            # Counters are cumulative and the close reading below still happens, so the window
            # stays usable; power integrals just span a longer last interval. Say so, do not lose it.
            warnings.warn(
                f"{fp.name}: {err}; closing the window from its last readings",
                RuntimeWarning,
                stacklevel=2,
            )
        finally:
            _current_window.reset(self._token)
        last = self._active_probes.tick()
        components: dict[str, ComponentEnergy] = {}
        for m in self._active_meters:
            for comp, energy in m.stop(last).items():
                components.setdefault(comp, energy)  # the first meter for a component wins
        self._fill(fp, self._first, last, components)
        cfg = self._config
        add_gpu_embodied(fp, self._active_meters, cfg.gpu_embodied_kg, cfg.gpu_lifetime_years)
        if exc is not None:
            fp.error = f"{type(exc).__name__}: {exc}"
        if self.on_close is not None:
            self.on_close(fp)

    def _fill(
        self, fp: Footprint, first: Tick, last: Tick, components: dict[str, ComponentEnergy]
    ) -> None:
        hw = self._config.hardware
        fp.duration_s = max(0.0, last.t_s - first.t_s)
        fp.cpu_time_s = max(0.0, last.tree_cpu_s - first.tree_cpu_s)
        fp.components = dict(sorted(components.items()))
        if hw.resource_share is not None:
            share = hw.resource_share
            how = "configured share"
        else:
            # Share of the machine's CPU capacity the tree used over the window (SCI RR/ToR).
            capacity_s = fp.duration_s * (os.cpu_count() or 1)
            share = min(1.0, fp.cpu_time_s / capacity_s) if capacity_s > 0 else 0.0
            how = f"CPU-time share of {os.cpu_count() or 1} logical CPUs"
        fp.embodied_g = embodied_g(hw.embodied_kg, hw.lifetime_years, fp.duration_s, share)
        fp.embodied_detail = (
            f"{hw.embodied_kg:g} kg x {fp.duration_s:.1f} s / {hw.lifetime_years:g} y x "
            f"{share:.3f} ({how})"
        )
        fp.closed = True

    # -- decorator -----------------------------------------------------------------------------
    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # A fresh window per call: recursion and threads each get their own footprint.
            with self._copy():
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def _copy(self) -> Window:
        return Window(
            self.name,
            unit=self.unit,
            units=self.units,
            config=self.config,
            pid=self.pid,
            on_close=self.on_close,
            probes=self._probes,
            meters=None,
        )


def track(
    name: str,
    *,
    unit: str | None = None,
    units: float | None = None,
    config: CarbonConfig | None = None,
    pid: int | None = None,
    on_close: Callable[[Footprint], None] | None = None,
    probes: Probes | None = None,
    meters: Sequence[Meter] | None = None,
) -> Window:
    """A ledger window over this process tree (or `pid`'s); see Window."""
    return Window(
        name,
        unit=unit,
        units=units,
        config=config,
        pid=pid,
        on_close=on_close,
        probes=probes,
        meters=meters,
    )
