"""Carbon configuration: region or intensity, PUE, hardware profile, estimate parameters.

Precedence, highest first: explicit arguments (CLI flags) > environment variables >
`lowcarb.toml` (the first found of ./lowcarb.toml, then $LOWCARB_HOME/lowcarb.toml) > defaults.
Every default below names its source; the README ("How lowcarb measures") explains them.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from dataclasses import dataclass, field, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from lowcarb.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Uptime Institute Global Data Center Survey 2023: average annual PUE of 1.58. The default assumes
# the work runs in a typical data centre; set pue = 1.0 for a laptop or a desktop.
DEFAULT_PUE = 1.58
# Power of one busy logical CPU when no counter exists: Cloud Carbon Footprint's SPECpower-derived
# "max watts per vCPU" (Intel Skylake 4.05 W, Cascade Lake 3.80 W), rounded to 4.0 W.
DEFAULT_CPU_W_PER_CORE = 4.0
# Memory power per GB resident: Cloud Carbon Footprint's memory coefficient (0.392 W/GB; Green
# Algorithms uses 0.3725 W/GB).
DEFAULT_RAM_W_PER_GB = 0.392
DEFAULT_PROFILE = "server"
DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"
# Where the reservation is read from (/proc/cpuinfo, /proc/self/cgroup, /sys/fs/cgroup, DMI);
# tests and containers that mount the host's files elsewhere point it at another tree.
DEFAULT_SYSTEM_ROOT = "/"
CONFIG_FILENAME = "lowcarb.toml"

ENV_VARS = {
    "region": "LOWCARB_REGION",
    "intensity_g_per_kwh": "LOWCARB_INTENSITY",
    "pue": "LOWCARB_PUE",
    "embodied_kg": "LOWCARB_EMBODIED_KG",
    "lifetime_years": "LOWCARB_LIFETIME_YEARS",
    "resource_share": "LOWCARB_RESOURCE_SHARE",
    "cpu_power_w": "LOWCARB_CPU_POWER_W",
    "sample_interval_s": "LOWCARB_SAMPLE_INTERVAL_S",
    "hardware_profile": "LOWCARB_HARDWARE_PROFILE",
    "powercap_root": "LOWCARB_POWERCAP_ROOT",
    "gpu_embodied_kg": "LOWCARB_GPU_EMBODIED_KG",
    "gpu_lifetime_years": "LOWCARB_GPU_LIFETIME_YEARS",
    "rapl_idle_w": "LOWCARB_RAPL_IDLE_W",
    "host_logical_cpus": "LOWCARB_HOST_LOGICAL_CPUS",
    "embodied_kg_per_vcpu": "LOWCARB_EMBODIED_KG_PER_VCPU",
    "system_root": "LOWCARB_SYSTEM_ROOT",
}
_FLOAT_KEYS = {
    "rapl_idle_w",
    "host_logical_cpus",
    "embodied_kg_per_vcpu",
    "intensity_g_per_kwh",
    "pue",
    "embodied_kg",
    "lifetime_years",
    "resource_share",
    "cpu_power_w",
    "sample_interval_s",
    "gpu_embodied_kg",
    "gpu_lifetime_years",
}


@lru_cache(maxsize=1)
def hardware_profiles() -> dict[str, dict[str, Any]]:
    """Packaged hardware profiles (Boavizta medians): name -> embodied_kg, lifetime_years,
    host_logical_cpus (servers: the host size a VM's vCPUs are a share of, else None), source."""
    text = (resources.files("lowcarb.measure") / "tables" / "hardware.csv").read_text("utf-8")
    return {
        r["profile"]: {
            "embodied_kg": float(r["embodied_kg"]),
            "lifetime_years": float(r["lifetime_years"]),
            "n_products": int(r["n_products"]),
            "host_logical_cpus": float(r["host_logical_cpus"]) if r["host_logical_cpus"] else None,
            "source": r["source"],
        }
        for r in csv.DictReader(text.splitlines())
    }


def _check_finite(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")


def _check_at_least(
    name: str,
    value: float | None,
    low: float,
    *,
    strict: bool = False,
    says: str = "",
    unit: str = "",
    note: str = "",
    advice: str = "",
) -> None:
    """None (not given) passes; else `value` must be finite and >= `low` (> with `strict`). The
    error reads "<says or name> must be >= <low> <unit> (<note>), got <value>; <advice>"."""
    if value is None:
        return
    _check_finite(name, value)
    if value > low or (value == low and not strict):
        return
    bound = f"{'>' if strict else '>='} {low}" + (f" {unit}" if unit else "") + (f" ({note})" if note else "")
    raise ConfigError(f"{says or name} must be {bound}, got {value}" + (f"; {advice}" if advice else ""))


@dataclass(frozen=True)
class HardwareProfile:
    """The SCI embodied-emissions inputs: M = TE x (time / lifetime) x share.

    embodied_kg: TE, the host's manufacturing footprint in kgCO2e (default: the median Boavizta
        server).
    lifetime_years: expected lifetime (default 4 years, Boavizta's server default).
    resource_share: the share of the host charged, when you know it (0.25 for 4 of 16 cores).
        None: lowcarb works it out (`lowcarb.measure.reservation`): the logical CPUs reserved (a
        VM's vCPUs, a container's CPU quota, an affinity mask) over the host's, or, when nothing
        is reserved, the tracked processes' CPU-time share of the machine.
    host_logical_cpus: logical CPUs of the physical host, used when lowcarb runs in a VM (which
        cannot see them). Default for servers: 96 (see the hardware table); None for other
        profiles, where the VM's own CPUs then stand for the host.
    embodied_kg_per_vcpu: the footprint of one logical CPU of the host, when you know it better
        than embodied_kg / host_logical_cpus (for example from your provider's figures).
    """

    embodied_kg: float = field(
        default_factory=lambda: hardware_profiles()[DEFAULT_PROFILE]["embodied_kg"]
    )
    lifetime_years: float = field(
        default_factory=lambda: hardware_profiles()[DEFAULT_PROFILE]["lifetime_years"]
    )
    resource_share: float | None = None
    host_logical_cpus: float | None = field(
        default_factory=lambda: hardware_profiles()[DEFAULT_PROFILE]["host_logical_cpus"]
    )
    embodied_kg_per_vcpu: float | None = None

    def __post_init__(self) -> None:
        _check_at_least("embodied_kg", self.embodied_kg, 0, unit="kgCO2e")
        _check_at_least("lifetime_years", self.lifetime_years, 0, strict=True)
        _check_at_least("host_logical_cpus", self.host_logical_cpus, 1,
                        note="the host's logical CPUs, e.g. 96")
        _check_at_least("embodied_kg_per_vcpu", self.embodied_kg_per_vcpu, 0, unit="kgCO2e")
        if self.resource_share is not None:
            _check_finite("resource_share", self.resource_share)
            if not 0 < self.resource_share <= 1:
                raise ConfigError(
                    f"resource_share must be in (0, 1] (e.g. 0.25 for 4 of 16 cores), "
                    f"got {self.resource_share}"
                )

    @classmethod
    def from_profile(cls, name: str, resource_share: float | None = None) -> HardwareProfile:
        profiles = hardware_profiles()
        if name not in profiles:
            raise ConfigError(
                f"unknown hardware profile {name!r}; choose one of {', '.join(profiles)} "
                "or set embodied_kg and lifetime_years"
            )
        p = profiles[name]
        return cls(p["embodied_kg"], p["lifetime_years"], resource_share, p["host_logical_cpus"])


@dataclass(frozen=True)
class CarbonConfig:
    """Everything the ledger needs to turn counters into grams. Validated on construction."""

    region: str | None = None
    intensity_g_per_kwh: float | None = None
    pue: float = DEFAULT_PUE
    hardware: HardwareProfile = field(default_factory=HardwareProfile)
    cpu_power_w: float | None = None  # whole-processor power at full load; None: 4 W per busy core
    sample_interval_s: float = 1.0
    powercap_root: str = DEFAULT_POWERCAP_ROOT  # where RAPL counters live (tests script a tree)
    # One GPU card's embodied kgCO2e and lifetime; None: the packaged default (gpu_embodied.py).
    gpu_embodied_kg: float | None = None
    gpu_lifetime_years: float | None = None
    # Package power of the idle machine, W; None: measured when the ledger starts (RAPL only).
    rapl_idle_w: float | None = None
    system_root: str = DEFAULT_SYSTEM_ROOT  # where the reservation is read (tests script a tree)

    def __post_init__(self) -> None:
        _check_at_least("pue", self.pue, 1.0, says="PUE", note="total facility power / IT power",
                        advice="use 1.0 for a machine outside a data centre")
        _check_at_least("intensity_g_per_kwh", self.intensity_g_per_kwh, 0, says="grid intensity",
                        unit="gCO2e/kWh")
        _check_at_least("cpu_power_w", self.cpu_power_w, 0, strict=True, says="CPU power", unit="W",
                        note="the processor's power at full load")
        _check_at_least("gpu_embodied_kg", self.gpu_embodied_kg, 0, unit="kgCO2e")
        _check_at_least("gpu_lifetime_years", self.gpu_lifetime_years, 0, strict=True)
        _check_at_least("sample_interval_s", self.sample_interval_s, 0, strict=True)
        _check_at_least("rapl_idle_w", self.rapl_idle_w, 0, unit="W",
                        note="the CPU packages' power when the machine is idle")
        if self.region is not None and self.intensity_g_per_kwh is None:
            from lowcarb.measure.grid import lookup_region

            lookup_region(self.region)  # raises with close matches

    def cpu_w_per_core(self) -> float:
        """Power of one busy logical CPU for the CPU-time estimate."""
        if self.cpu_power_w is not None:
            return self.cpu_power_w / (os.cpu_count() or 1)
        return DEFAULT_CPU_W_PER_CORE

    def grid(self) -> tuple[float, str]:
        """(intensity in gCO2e/kWh, where it came from)."""
        from lowcarb.measure.grid import default_region, lookup_region

        if self.intensity_g_per_kwh is not None:
            return self.intensity_g_per_kwh, "user-set intensity"
        g = lookup_region(self.region) if self.region else default_region()
        return g.intensity_g_per_kwh, f"{g.key}: {g.source}"

    @classmethod
    def resolve(cls, **overrides: Any) -> CarbonConfig:
        return load_carbon_config(**overrides)


def find_config_file(cwd: Path | None = None) -> Path | None:
    """./lowcarb.toml, else $LOWCARB_HOME/lowcarb.toml (default home ~/.lowcarb), else None."""
    candidates = [(cwd or Path.cwd()) / CONFIG_FILENAME]
    home = os.environ.get("LOWCARB_HOME")
    candidates.append((Path(home) if home else Path.home() / ".lowcarb") / CONFIG_FILENAME)
    return next((p for p in candidates if p.is_file()), None)


def _read_file_settings(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; fix or remove the file") from exc
    section = data.get("carbon", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [carbon] must be a table")
    unknown = set(section) - set(ENV_VARS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))} in [carbon]; "
            f"known keys: {', '.join(ENV_VARS)}"
        )
    return dict(section)


def _read_env_settings() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, var in ENV_VARS.items():
        raw = os.environ.get(var)
        if raw is None or raw.strip() == "":
            continue
        if key in _FLOAT_KEYS:
            try:
                out[key] = float(raw)
            except ValueError:
                raise ConfigError(f"{var}={raw!r} is not a number") from None
        else:
            out[key] = raw.strip()
    return out


def load_carbon_config(**overrides: Any) -> CarbonConfig:
    """Resolve a CarbonConfig: overrides (None = not given) > environment > lowcarb.toml > defaults.

    Accepted keys: region, intensity_g_per_kwh, pue, embodied_kg, lifetime_years, resource_share,
    cpu_power_w, sample_interval_s, hardware_profile, powercap_root, gpu_embodied_kg,
    gpu_lifetime_years, rapl_idle_w, host_logical_cpus, embodied_kg_per_vcpu, system_root.
    """
    unknown = set(overrides) - set(ENV_VARS)
    if unknown:
        raise TypeError(f"load_carbon_config: unknown setting(s) {sorted(unknown)}")
    levels: list[dict[str, Any]] = []
    path = find_config_file()
    if path is not None:
        levels.append(_read_file_settings(path))
    levels.append(_read_env_settings())
    levels.append({k: v for k, v in overrides.items() if v is not None})
    settings: dict[str, Any] = {}
    for level in levels:
        # A region set at a higher level replaces an intensity set lower down (and vice versa):
        # `--region FR` must win over an intensity from the config file.
        if "region" in level and "intensity_g_per_kwh" not in level:
            settings.pop("intensity_g_per_kwh", None)
        if "intensity_g_per_kwh" in level and "region" not in level:
            settings.pop("region", None)
        settings.update(level)

    for key, value in settings.items():
        if key in _FLOAT_KEYS:
            settings[key] = _as_float(key, value)
        elif not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
    profile = HardwareProfile.from_profile(settings.pop("hardware_profile", DEFAULT_PROFILE))
    hardware = HardwareProfile(
        embodied_kg=settings.pop("embodied_kg", profile.embodied_kg),
        lifetime_years=settings.pop("lifetime_years", profile.lifetime_years),
        resource_share=settings.pop("resource_share", None),
        host_logical_cpus=settings.pop("host_logical_cpus", profile.host_logical_cpus),
        embodied_kg_per_vcpu=settings.pop("embodied_kg_per_vcpu", None),
    )
    names = {f.name for f in fields(CarbonConfig)}
    return CarbonConfig(hardware=hardware, **{k: v for k, v in settings.items() if k in names})


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, got {value!r}") from None
