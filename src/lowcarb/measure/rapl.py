"""CPU package and DRAM energy from RAPL counters in the Linux powercap tree.

Domains live in `<root>/intel-rapl:N` (packages) and `<root>/intel-rapl:N:M` (sub-domains; the
one named "dram" is memory). AMD CPUs use the same driver and names. Each domain has `energy_uj`
(a counter that wraps at `max_energy_range_uj`) and `name`. The counters measure the whole machine,
so each interval's energy is attributed to the tracked tree by its CPU-time share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lowcarb.measure.footprint import ComponentEnergy
from lowcarb.measure.meter import cpu_share
from lowcarb.measure.probes import Tick

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


class RaplMeter:
    """Attributed RAPL energy: sum over intervals of d_energy x (d_tree_cpu / d_machine_cpu)."""

    def __init__(self, domains: list[RaplDomain]) -> None:
        self.domains = domains
        self.components = sorted({d.component for d in domains})
        self._last_uj: list[int] = []
        self._last_tick: Tick | None = None
        self._energy_j = dict.fromkeys(self.components, 0.0)
        self._machine_j = dict.fromkeys(self.components, 0.0)

    def _read(self) -> list[int]:
        return [d.read_uj() for d in self.domains]

    def start(self, tick: Tick) -> None:
        self._last_uj = self._read()
        self._last_tick = tick

    def sample(self, tick: Tick) -> None:
        assert self._last_tick is not None, "RaplMeter.sample before start"
        now = self._read()
        share = cpu_share(
            tick.tree_cpu_s - self._last_tick.tree_cpu_s,
            tick.machine_cpu_s - self._last_tick.machine_cpu_s,
        )
        for d, prev, cur in zip(self.domains, self._last_uj, now, strict=True):
            delta_uj = cur - prev
            if delta_uj < 0:  # the counter wrapped once (sampling is far faster than a wrap)
                delta_uj += d.max_energy_range_uj
            self._machine_j[d.component] += delta_uj / 1e6
            self._energy_j[d.component] += share * delta_uj / 1e6
        self._last_uj = now
        self._last_tick = tick

    def stop(self, tick: Tick) -> dict[str, ComponentEnergy]:
        self.sample(tick)
        out = {}
        for comp in self.components:
            names = ", ".join(d.name for d in self.domains if d.component == comp)
            out[comp] = ComponentEnergy(
                self._energy_j[comp],
                "measured: rapl",
                f"{names}; machine {self._machine_j[comp]:.1f} J attributed by CPU-time share",
            )
        return out
