"""What hardware a job really holds, and the share of the host its window is charged.

SCI (ISO/IEC 21031) charges embodied emissions by the resources *reserved* over the total
resources of the hardware (RR / ToR). A process sees only part of that picture: in a virtual
machine its "machine" is a few vCPUs of a host it cannot see; in a container a CPU quota
(cgroup `cpu.max`) or an affinity mask limits it to part of the machine it sees. The rule:

- `resource_share` set: that share of the host (the user knows best).
- Something reserved (a VM, a CPU quota, an affinity mask): the reserved logical CPUs R over the
  host's logical CPUs N. In a VM, N is `host_logical_cpus` (default for a server: 96, from the
  Boavizta data, see the hardware table); elsewhere N is the machine's own count. R is shared
  equally by the processes of one distributed job on the host (LOCAL_WORLD_SIZE, set by torchrun).
- Nothing reserved (the whole machine is visible): the tracked tree's CPU-time share of the
  machine, CPU seconds / (duration x N): a job is charged the CPUs it kept busy.

In every case the window is charged C logical CPUs for its duration, at E / N kg each (E the
host's manufacturing footprint, or `embodied_kg_per_vcpu`): M = (E / N) x C x duration / lifetime.
The same share charges the idle power of the CPU packages (RAPL).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lowcarb.measure.config import CarbonConfig, HardwareProfile
from lowcarb.measure.embodied import embodied_g

# DMI vendor / product strings of virtual platforms. "Amazon EC2" is also the vendor of bare-metal
# instances (product "*.metal"), so it needs the product check.
_VM_DMI = re.compile(
    r"qemu|kvm|vmware|virtualbox|innotek|xen|bochs|bhyve|parallels|virtual machine|"
    r"google compute engine|openstack|cloud hypervisor|firecracker",
    re.IGNORECASE,
)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def detect_vm(root: str | Path = "/") -> str:
    """Why this looks like a virtual machine ("" when it does not)."""
    root = Path(root)
    cpuinfo = _read(root / "proc" / "cpuinfo")
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")) and "hypervisor" in line.split(":", 1)[-1].split():
            return "hypervisor flag in /proc/cpuinfo"
    hv = _read(root / "sys" / "hypervisor" / "type")
    if hv:
        return f"/sys/hypervisor/type is {hv!r}"
    dmi = root / "sys" / "class" / "dmi" / "id"
    vendor, product = _read(dmi / "sys_vendor"), _read(dmi / "product_name")
    if vendor == "Amazon EC2" and product and not product.endswith(".metal"):
        return f"DMI: {vendor} {product}"
    for text in (vendor, product):
        if text and _VM_DMI.search(text):
            return f"DMI: {vendor} {product}".strip()
    return ""


def _cgroup_dirs(root: Path) -> list[tuple[Path, str]]:
    """(folder, version) of this process's CPU cgroup and its ancestors, innermost first."""
    out: list[tuple[Path, str]] = []
    base = root / "sys" / "fs" / "cgroup"
    for line in _read(root / "proc" / "self" / "cgroup").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":
            mount, version = base, "v2"
        elif "cpu" in controllers.split(","):
            mount, version = base / controllers, "v1"
            if not mount.is_dir():
                mount = base / "cpu"
        else:
            continue
        here = mount / rel.lstrip("/")
        # Without a cgroup namespace the path names the host's hierarchy: walk up to what exists.
        while True:
            if here.is_dir():
                out.append((here, version))
            if here == mount or mount not in here.parents:
                break
            here = here.parent
    return out


def cgroup_cpu_limit(root: str | Path = "/") -> tuple[float, str] | None:
    """(CPUs, evidence) of the tightest CPU quota on this process's cgroups, or None."""
    best: tuple[float, str] | None = None
    for folder, version in _cgroup_dirs(Path(root)):
        if version == "v2":
            text = _read(folder / "cpu.max").split()
            if len(text) != 2 or text[0] == "max":
                continue
            quota, period = text
            where = folder / "cpu.max"
        else:
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            where = folder / "cpu.cfs_quota_us"
        try:
            cpus = int(quota) / int(period)
        except (ValueError, ZeroDivisionError):
            continue
        if cpus > 0 and (best is None or cpus < best[0]):
            best = (cpus, f"CPU quota {quota}/{period} = {cpus:g} CPUs ({where})")
    return best


@dataclass(frozen=True)
class Reservation:
    """What this process may use: visible CPUs, reserved CPUs, the host's CPUs, and why."""

    visible_cpus: int  # logical CPUs the OS shows
    reserved_cpus: float  # logical CPUs this process may use (quota, affinity, VM), <= visible
    host_cpus: float  # logical CPUs of the physical host
    vm: str = ""  # evidence that this is a VM ("" when not)
    limits: tuple[str, ...] = ()  # evidence of a CPU quota or an affinity mask
    host_source: str = ""  # where host_cpus comes from

    @property
    def reserved(self) -> bool:
        return bool(self.vm or self.limits)

    def describe(self) -> str:
        what = [f"VM ({self.vm})"] if self.vm else []
        return "; ".join([*what, *self.limits]) or "nothing reserved"


def detect_reservation(
    config: CarbonConfig,
    *,
    pid: int | None = None,
    cpu_count: int | None = None,
    affinity: set[int] | None = None,
) -> Reservation:
    """Read the VM evidence, CPU quota and affinity of `pid` (default: this process)."""
    root = Path(config.system_root)
    visible = cpu_count or os.cpu_count() or 1
    if affinity is None and hasattr(os, "sched_getaffinity"):
        try:
            affinity = os.sched_getaffinity(pid or 0)
        except OSError:  # the process is gone or not ours: no affinity evidence
            affinity = None
    reserved = float(visible)
    limits: list[str] = []
    quota = cgroup_cpu_limit(root)
    if quota is not None and quota[0] < visible:
        reserved = quota[0]
        limits.append(quota[1])
    if affinity is not None and 0 < len(affinity) < visible:
        limits.append(f"affinity: {len(affinity)} of {visible} logical CPUs")
        reserved = min(reserved, float(len(affinity)))
    vm = detect_vm(root)
    hw = config.hardware
    if not vm:
        host, source = float(visible), f"this machine's {visible} logical CPUs"
    elif hw.host_logical_cpus is not None:
        host = max(float(visible), hw.host_logical_cpus)
        source = f"host_logical_cpus {hw.host_logical_cpus:g} (the VM cannot see its host)"
    else:
        host = float(visible)
        source = "the VM's own CPUs (host size unknown: set host_logical_cpus)"
    return Reservation(visible, reserved, host, vm, tuple(limits), source)


def job_processes_on_host() -> int:
    """Processes of one distributed job on this host, which share its reservation equally."""
    raw = os.environ.get("LOCAL_WORLD_SIZE", "").strip()  # set by torchrun for every worker
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1


@dataclass(frozen=True)
class MachineShare:
    """The logical CPUs a window is charged for (on average over it), of how many, and why."""

    cpus: float
    host_cpus: float
    basis: str  # "configured" | "reserved" | "cpu-time"
    reason: str

    @property
    def share(self) -> float:
        return min(1.0, self.cpus / self.host_cpus) if self.host_cpus > 0 else 0.0


@dataclass(frozen=True)
class SharePolicy:
    """How a window's share of the host is worked out (module docstring): one rule for the
    embodied footprint and for RAPL idle power."""

    hardware: HardwareProfile
    reservation: Reservation
    job_processes: int = 1

    def share(self, duration_s: float, cpu_time_s: float) -> MachineShare:
        r = self.reservation
        if self.hardware.resource_share is not None:
            s = self.hardware.resource_share
            return MachineShare(s * r.host_cpus, r.host_cpus, "configured", "resource_share set")
        if r.reserved:
            cpus = r.reserved_cpus / self.job_processes
            split = f", split by {self.job_processes} processes of the job" if self.job_processes > 1 else ""
            why = f"{r.reserved_cpus:g} of {r.host_cpus:g} host logical CPUs reserved{split}: "
            return MachineShare(cpus, r.host_cpus, "reserved", why + r.describe())
        busy = cpu_time_s / duration_s if duration_s > 0 else 0.0
        why = (
            f"CPU-time share of {r.visible_cpus} logical CPUs (nothing reserved: no VM, CPU quota "
            "or affinity limit)"
        )
        return MachineShare(min(float(r.visible_cpus), busy), r.host_cpus, "cpu-time", why)

    def embodied(self, duration_s: float, cpu_time_s: float) -> tuple[float, str]:
        """(grams CO2e, how they were worked out) for a window."""
        hw = self.hardware
        m = self.share(duration_s, cpu_time_s)
        years = f"{duration_s:.1f} s / {hw.lifetime_years:g} y"
        if m.basis == "configured" or hw.embodied_kg_per_vcpu is None:
            grams = embodied_g(hw.embodied_kg, hw.lifetime_years, duration_s, m.share)
            per_cpu = f"{hw.embodied_kg:g} kg / {m.host_cpus:g} logical CPUs"
            kg_per_cpu = hw.embodied_kg / m.host_cpus
        else:
            kg_per_cpu = hw.embodied_kg_per_vcpu
            host_kg = kg_per_cpu * max(m.host_cpus, m.cpus)
            grams = embodied_g(host_kg, hw.lifetime_years, duration_s, m.share)
            per_cpu = "embodied_kg_per_vcpu"
        detail = (
            f"{kg_per_cpu:.4g} kg per logical CPU ({per_cpu}) x {m.cpus:.3g} CPUs x {years}; "
            f"share {m.share:.4f} ({m.basis}: {m.reason}); host: {self.reservation.host_source}"
        )
        return grams, detail
