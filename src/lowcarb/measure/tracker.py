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
from lowcarb.measure.estimate import CpuTimeEstimateMeter, RamEstimateMeter
from lowcarb.measure.footprint import ComponentEnergy, Footprint, check_units
from lowcarb.measure.gpu_embodied import add_gpu_embodied
from lowcarb.measure.gpu_meter import NvmlMeter
from lowcarb.measure.integrate import PowerIntegrator, Sampler
from lowcarb.measure.meter import Meter
from lowcarb.measure.nvml import NvmlUnavailable, open_nvml
from lowcarb.measure.probes import Probes, SystemProbes, Tick
from lowcarb.measure.rapl import RaplMeter, RaplUnavailable, discover, idle_baseline
from lowcarb.measure.reservation import SharePolicy, detect_reservation, job_processes_on_host

# The id of the innermost open window in this context (thread / task): the parent of a new one.
_current_window: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lowcarb_current_window", default=None
)
# A window open in a parent process (`lowcarb measure`, or a stored window whose code starts
# subprocesses) names itself here: the child's outermost windows are nested in it, since the
# parent's process tree already counts the child's work.
PARENT_WINDOW_ENV = "LOWCARB_PARENT_WINDOW"
F = TypeVar("F", bound=Callable[..., Any])


def current_window_id() -> str | None:
    return _current_window.get()


def new_window_id() -> str:
    return uuid.uuid4().hex[:12]


def share_policy(config: CarbonConfig, pid: int | None = None) -> SharePolicy:
    """How this process's windows are charged their share of the host (reservation module)."""
    return SharePolicy(config.hardware, detect_reservation(config, pid=pid), job_processes_on_host())


def select_meters(
    config: CarbonConfig, *, use_nvml: bool = True, policy: SharePolicy | None = None
) -> list[Meter]:
    """Counters where readable, estimates where not; each fallback records why."""
    meters: list[Meter] = []
    provided: set[str] = set()
    try:
        domains = discover(config.powercap_root)
        rapl = RaplMeter(
            domains,
            idle=idle_baseline(domains, config.rapl_idle_w),
            policy=policy if policy is not None else share_policy(config),
        )
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
        window_id: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a ledger window needs a non-empty name, e.g. track('fine-tune')")
        if units is not None:
            units = check_units(units)
        self.name = name
        self.unit = unit
        self.units = units
        self.config = config
        self.pid = pid
        self.on_close = on_close
        self._probes = probes
        self._meters = list(meters) if meters is not None else None
        self.window_id = window_id
        self.footprint: Footprint | None = None

    # -- context manager -----------------------------------------------------------------------
    def __enter__(self) -> Footprint:
        config = self.config if self.config is not None else load_carbon_config()
        self._config = config
        probes = self._probes if self._probes is not None else SystemProbes(self.pid)
        policy = share_policy(config, self.pid)
        self._policy = policy
        meters = self._meters if self._meters is not None else select_meters(config, policy=policy)
        intensity, source = config.grid()
        fp = Footprint(
            name=self.name,
            id=self.window_id or new_window_id(),
            parent=_current_window.get() or os.environ.get(PARENT_WINDOW_ENV) or None,
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
        self._rss = PowerIntegrator()  # resident GiB over time: its mean goes to the footprint
        self._rss.add(self._first.t_s, self._first.rss_bytes / 2**30)
        for m in meters:
            m.start(self._first)
        self._sampler = Sampler(config.sample_interval_s, self._on_tick)
        self._sampler.start()
        self._token = _current_window.set(fp.id)
        return fp

    def _on_tick(self) -> None:
        tick = self._active_probes.tick()
        self._rss.add(tick.t_s, tick.rss_bytes / 2**30)
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
        self._rss.add(last.t_s, last.rss_bytes / 2**30)
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
        fp.duration_s = max(0.0, last.t_s - first.t_s)
        fp.cpu_time_s = max(0.0, last.tree_cpu_s - first.tree_cpu_s)
        fp.components = dict(sorted(components.items()))
        if fp.duration_s > 0:
            fp.rss_gib_mean = self._rss.energy_j / fp.duration_s  # integral of GiB dt / duration
        # SCI's M term, charged by the share of the host this window holds (reservation module).
        fp.embodied_g, fp.embodied_detail = self._policy.embodied(fp.duration_s, fp.cpu_time_s)
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
