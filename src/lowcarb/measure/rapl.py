"""CPU package and DRAM energy from RAPL counters in the Linux powercap tree.

Domains live in `<root>/intel-rapl:N` (packages) and `<root>/intel-rapl:N:M` (sub-domains; the
one named "dram" is memory). AMD CPUs use the same driver and names. Each domain has `energy_uj`
(a counter that wraps at `max_energy_range_uj`) and `name`. The counters measure the whole machine.

Package energy has two parts. The idle baseline, what the packages draw when nothing runs, is
measured once when the ledger starts (a short quiet probe, `measure_idle_baseline`) or set with
`rapl_idle_w`; it is the machine's standing cost, charged to a window by its share of the host
(`reservation.SharePolicy`: the CPUs reserved, else its CPU-time share of the machine's capacity).
The rest, the dynamic part, is attributed interval by interval by the tracked tree's share of the
machine's busy CPU time. DRAM energy is attributed whole by that CPU-time share.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lowcarb.measure.footprint import ComponentEnergy
from lowcarb.measure.meter import cpu_share
from lowcarb.measure.probes import Tick, machine_busy_cpu_s
from lowcarb.measure.reservation import SharePolicy

# Long enough for the counters (updated about every millisecond) to give a stable power, short
# enough to be paid once per process without notice.
IDLE_PROBE_S = 0.1
# Above this, the machine was too busy during the probe for the baseline to be only idle power.
BUSY_PROBE_WARNING = 0.10

_DOMAIN_DIR = re.compile(r"^[a-z]+-rapl:\d+(:\d+)?$")


@dataclass(frozen=True)
class RaplDomain:
    path: Path
    name: str  # "package-0", "dram", ...
    component: str  # "cpu" or "ram"
    max_energy_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().strip())


class RaplUnavailable(Exception):
    """RAPL cannot be used here; the message says why (recorded next to the fallback)."""


def discover(root: str | Path) -> list[RaplDomain]:
    """Readable package and dram domains under `root`; raises RaplUnavailable with the reason."""
    root = Path(root)
    if not root.is_dir():
        raise RaplUnavailable(f"rapl: {root} does not exist (no powercap driver: VM or container)")
    domains: list[RaplDomain] = []
    seen: set[Path] = set()
    for d in sorted(root.iterdir()):
        if not _DOMAIN_DIR.match(d.name):
            continue
        real = d.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            name = (d / "name").read_text().strip()
        except OSError:
            continue
        if name.startswith("package"):
            component = "cpu"
        elif name == "dram":
            component = "ram"
        else:
            continue  # core/uncore are inside package; psys is the whole platform
        try:
            max_uj = int((d / "max_energy_range_uj").read_text().strip())
            domain = RaplDomain(d, name, component, max_uj)
            domain.read_uj()
        except PermissionError:
            raise RaplUnavailable(
                f"rapl: permission denied reading {d / 'energy_uj'} (root-only on Linux >= 5.10; "
                "grant read access to use the counter)"
            ) from None
        except (OSError, ValueError) as exc:
            raise RaplUnavailable(f"rapl: cannot read {d}: {exc}") from None
        domains.append(domain)
    if not any(x.component == "cpu" for x in domains):
        raise RaplUnavailable(f"rapl: no package domain under {root} (VM or unsupported CPU)")
    return domains


def _delta_uj(domain: RaplDomain, prev: int, cur: int) -> int:
    delta = cur - prev
    if delta < 0:  # the counter wrapped once (sampling is far faster than a wrap)
        delta += domain.max_energy_range_uj
    return delta


@dataclass(frozen=True)
class IdleBaseline:
    """Power of the CPU packages of the idle machine, per package domain, and where it came from."""

    power_w: dict[str, float]  # package domain name -> W
    source: str

    @property
    def total_w(self) -> float:
        return sum(self.power_w.values())


def measure_idle_baseline(
    domains: list[RaplDomain],
    *,
    probe_s: float = IDLE_PROBE_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    machine_cpu_s: Callable[[], float] = machine_busy_cpu_s,
    cpu_count: int | None = None,
) -> IdleBaseline:
    """Package power over a short quiet probe (this thread sleeps), with how busy the machine was.

    Taken when the ledger starts, before the tracked work: what the packages draw then is the
    machine's standing cost. If other work kept the machine busy during the probe the figure
    also holds their dynamic power; the source says so, and `rapl_idle_w` sets it instead.
    """
    packages = [d for d in domains if d.component == "cpu"]
    before, busy0, t0 = [d.read_uj() for d in packages], machine_cpu_s(), clock()
    sleep(probe_s)
    after, busy1, t1 = [d.read_uj() for d in packages], machine_cpu_s(), clock()
    dt = max(t1 - t0, 1e-9)
    power = {
        d.name: _delta_uj(d, a, b) / 1e6 / dt for d, a, b in zip(packages, before, after, strict=True)
    }
    busy = max(0.0, busy1 - busy0) / (dt * (cpu_count or os.cpu_count() or 1))
    source = f"measured at ledger start over {dt:.2f} s, machine {100 * busy:.0f} % busy"
    if busy > BUSY_PROBE_WARNING:
        source += " (busy: the baseline may include others' work; set rapl_idle_w)"
    return IdleBaseline(power, source)


_baselines: dict[tuple[str, ...], IdleBaseline] = {}
_baselines_lock = threading.Lock()


def idle_baseline(domains: list[RaplDomain], idle_w: float | None = None) -> IdleBaseline:
    """The configured baseline (`rapl_idle_w`, split equally over the packages), else the one
    measured when the first window of this process opened on these counters."""
    packages = [d.name for d in domains if d.component == "cpu"]
    if idle_w is not None:
        each = idle_w / len(packages)
        return IdleBaseline(dict.fromkeys(packages, each), f"rapl_idle_w {idle_w:g} W (set)")
    key = tuple(str(d.path) for d in domains)
    with _baselines_lock:
        if key not in _baselines:
            _baselines[key] = measure_idle_baseline(domains)
        return _baselines[key]


def prepare_idle_baseline(powercap_root: str | Path, idle_w: float | None = None) -> None:
    """Measure the idle baseline now (once per process), before work starts: `lowcarb measure`
    calls it before it starts the command. Nothing to do without readable counters."""
    try:
        domains = discover(powercap_root)
    except RaplUnavailable:
        return
    idle_baseline(domains, idle_w)


class RaplMeter:
    """Attributed RAPL energy (module docstring). Without an idle baseline the whole package
    energy is attributed by CPU-time share, interval by interval."""

    def __init__(
        self,
        domains: list[RaplDomain],
        *,
        idle: IdleBaseline | None = None,
        policy: SharePolicy | None = None,
    ) -> None:
        if idle is not None and policy is None:
            raise ValueError("RaplMeter: an idle baseline needs the SharePolicy that charges it")
        self.domains = domains
        self.components = sorted({d.component for d in domains})
        self.idle = idle
        self.policy = policy
        self._last_uj: list[int] = []
        self._first_tick: Tick | None = None
        self._last_tick: Tick | None = None
        self._energy_j = dict.fromkeys(self.components, 0.0)  # attributed by CPU-time share
        self._machine_j = dict.fromkeys(self.components, 0.0)
        self._idle_j = 0.0  # the machine's idle package energy over the window

    def _read(self) -> list[int]:
        return [d.read_uj() for d in self.domains]

    def start(self, tick: Tick) -> None:
        self._last_uj = self._read()
        self._first_tick = self._last_tick = tick

    def sample(self, tick: Tick) -> None:
        assert self._last_tick is not None, "RaplMeter.sample before start"
        now = self._read()
        last = self._last_tick
        share = cpu_share(tick.tree_cpu_s - last.tree_cpu_s, tick.machine_cpu_s - last.machine_cpu_s)
        dt = max(0.0, tick.t_s - last.t_s)
        for d, prev, cur in zip(self.domains, self._last_uj, now, strict=True):
            energy_j = _delta_uj(d, prev, cur) / 1e6
            self._machine_j[d.component] += energy_j
            if self.idle is not None and d.component == "cpu":
                # The idle part can never exceed what the package drew in the interval.
                idle_j = min(energy_j, self.idle.power_w.get(d.name, 0.0) * dt)
                self._idle_j += idle_j
                energy_j -= idle_j
            self._energy_j[d.component] += share * energy_j
        self._last_uj = now
        self._last_tick = tick

    def stop(self, tick: Tick) -> dict[str, ComponentEnergy]:
        self.sample(tick)
        out = {}
        for comp in self.components:
            names = ", ".join(d.name for d in self.domains if d.component == comp)
            energy_j = self._energy_j[comp]
            detail = f"{names}; machine {self._machine_j[comp]:.1f} J attributed by CPU-time share"
            if comp == "cpu" and self.idle is not None and self.policy is not None:
                idle_part, idle_detail = self._idle_charge(tick)
                energy_j += idle_part
                detail = f"{names}; {idle_detail}"
            out[comp] = ComponentEnergy(energy_j, "measured: rapl", detail)
        return out

    def _idle_charge(self, tick: Tick) -> tuple[float, str]:
        """(idle joules charged, how the package energy was split) at the close."""
        assert self._first_tick is not None and self.idle is not None and self.policy is not None
        first = self._first_tick
        m = self.policy.share(tick.t_s - first.t_s, tick.tree_cpu_s - first.tree_cpu_s)
        charged = self._idle_j * m.share
        machine = self._machine_j["cpu"]
        return charged, (
            f"machine {machine:.1f} J = idle {self._idle_j:.1f} J ({self.idle.total_w:.2f} W, "
            f"{self.idle.source}) + dynamic {machine - self._idle_j:.1f} J; dynamic by CPU-time "
            f"share: {self._energy_j['cpu']:.1f} J; idle by the share of the host "
            f"{m.share:.4f} ({m.basis}: {m.reason}): {charged:.1f} J"
        )
