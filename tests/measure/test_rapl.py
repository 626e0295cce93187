"""RAPL on a scripted powercap tree: package + dram, wraparound, attribution, permission denied."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowcarb.measure import CarbonConfig, HardwareProfile, track
from lowcarb.measure.rapl import (
    IdleBaseline,
    RaplMeter,
    RaplUnavailable,
    discover,
    idle_baseline,
    measure_idle_baseline,
)
from lowcarb.measure.reservation import Reservation, SharePolicy
from lowcarb.measure.tracker import select_meters

from .scripted import ScriptedProbes, tick

MAX_UJ = 262_143_328_850  # a real package max_energy_range_uj


def make_domain(root: Path, dirname: str, name: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    d = root / dirname
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def set_uj(d: Path, value: int) -> None:
    (d / "energy_uj").write_text(f"{value}\n")


@pytest.fixture
def powercap(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "powercap"
    return {
        "root": root,
        "pkg": make_domain(root, "intel-rapl:0", "package-0", 1_000_000),
        "core": make_domain(root, "intel-rapl:0:0", "core", 5),
        "dram": make_domain(root, "intel-rapl:0:1", "dram", 2_000_000),
        "psys": make_domain(root, "intel-rapl:1", "psys", 7),
        "mmio": make_domain(root, "intel-rapl-mmio:0", "package-0", 9),
    }


def test_discover_keeps_package_and_dram_only(powercap):
    domains = discover(powercap["root"])
    assert [(d.name, d.component) for d in domains] == [("package-0", "cpu"), ("dram", "ram")]
    assert domains[0].max_energy_range_uj == MAX_UJ


def test_counter_differences_with_full_share(powercap):
    meter = RaplMeter(discover(powercap["root"]))
    meter.start(tick(0.0, tree=0.0, machine=0.0))
    set_uj(powercap["pkg"], 1_000_000 + 30_000_000)  # +30 J
    set_uj(powercap["dram"], 2_000_000 + 4_000_000)  # +4 J
    meter.sample(tick(1.0, tree=1.0, machine=1.0))
    set_uj(powercap["pkg"], 1_000_000 + 50_000_000)  # +20 J more
    out = meter.stop(tick(2.0, tree=2.0, machine=2.0))
    assert out["cpu"].energy_j == pytest.approx(50.0)
    assert out["ram"].energy_j == pytest.approx(4.0)
    assert out["cpu"].method == "measured: rapl"


def test_wraparound_uses_max_energy_range(powercap):
    set_uj(powercap["pkg"], MAX_UJ - 1_000_000)  # 1 J below the wrap
    meter = RaplMeter(discover(powercap["root"]))
    meter.start(tick(0.0, tree=0.0, machine=0.0))
    set_uj(powercap["pkg"], 2_000_000)  # wrapped: 1 J + 2 J
    out = meter.stop(tick(1.0, tree=1.0, machine=1.0))
    assert out["cpu"].energy_j == pytest.approx(3.0)


def test_two_processes_split_the_machine_counter(powercap):
    """Two tracked trees on one machine share its counter by CPU-time share, never both claim it."""
    domains = discover(powercap["root"])
    a, b = RaplMeter(domains), RaplMeter(domains)
    # machine busy time = A's + B's; A runs 3x as much as B in interval 1, equally in interval 2
    a.start(tick(0.0, tree=0.0, machine=0.0))
    b.start(tick(0.0, tree=0.0, machine=0.0))
    set_uj(powercap["pkg"], 1_000_000 + 100_000_000)  # +100 J
    set_uj(powercap["dram"], 2_000_000 + 8_000_000)  # +8 J
    a.sample(tick(1.0, tree=1.5, machine=2.0))
    b.sample(tick(1.0, tree=0.5, machine=2.0))
    set_uj(powercap["pkg"], 1_000_000 + 140_000_000)  # +40 J
    out_a = a.stop(tick(2.0, tree=2.5, machine=4.0))
    out_b = b.stop(tick(2.0, tree=1.5, machine=4.0))
    assert out_a["cpu"].energy_j == pytest.approx(75.0 + 20.0)
    assert out_b["cpu"].energy_j == pytest.approx(25.0 + 20.0)
    assert out_a["cpu"].energy_j + out_b["cpu"].energy_j == pytest.approx(140.0)
    assert out_a["ram"].energy_j + out_b["ram"].energy_j == pytest.approx(8.0)


def test_permission_denied_falls_back_with_reason(powercap, monkeypatch):
    real_read_text = Path.read_text

    def guarded(self: Path, *args, **kwargs):
        if self.name == "energy_uj":  # what a non-root user sees on Linux >= 5.10
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", guarded)
    with pytest.raises(RaplUnavailable, match="permission denied"):
        discover(powercap["root"])

    config = CarbonConfig(powercap_root=str(powercap["root"]), cpu_power_w=None)
    probes = ScriptedProbes(tree_cpu_s=lambda t: t * 0.5)
    with track("fallback", config=config, probes=probes) as fp:
        pass
    assert fp.components["cpu"].method.startswith("estimated: cpu-time")
    assert "permission denied" in fp.components["cpu"].detail
    assert fp.components["ram"].method.startswith("estimated: resident memory")


def test_missing_tree_and_vm_reasons(tmp_path):
    with pytest.raises(RaplUnavailable, match="does not exist"):
        discover(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RaplUnavailable, match="no package domain"):
        discover(tmp_path / "empty")


def test_window_uses_rapl_when_readable(powercap):
    config = CarbonConfig(powercap_root=str(powercap["root"]), sample_interval_s=60)
    meters = select_meters(config, use_nvml=False)
    assert isinstance(meters[0], RaplMeter)
    probes = ScriptedProbes(tree_cpu_s=lambda t: t, machine_cpu_s=lambda t: 2 * t)
    with track("rapl", config=config, probes=probes, meters=meters) as fp:
        set_uj(powercap["pkg"], 1_000_000 + 10_000_000)
    # one interval, tree used half of the machine's CPU time: 5 J of the 10 J
    assert fp.components["cpu"].energy_j == pytest.approx(5.0)
    assert fp.components["cpu"].method == "measured: rapl"
    assert fp.components["ram"].method == "measured: rapl"


# -- idle baseline -------------------------------------------------------------------------------

IDLE_W = 30.0


class PackageAt:
    """A package counter drawing `idle_w` plus `dynamic_w` while the scripted clock advances."""

    def __init__(self, pkg: Path, start_uj: int = 1_000_000) -> None:
        self.pkg, self.uj, self.t = pkg, start_uj, 0.0

    def advance(self, seconds: float, watts: float) -> None:
        self.uj += int(seconds * watts * 1e6)
        self.t += seconds
        set_uj(self.pkg, self.uj)


def _bare_metal(cpus: int = 8) -> SharePolicy:
    return SharePolicy(HardwareProfile(), Reservation(cpus, float(cpus), float(cpus)))


def test_idle_baseline_measured_by_a_quiet_probe(powercap):
    pkg = PackageAt(powercap["pkg"])
    busy = iter([100.0, 100.02])  # 0.02 CPU-s over 0.25 s on 8 CPUs: 1 % busy
    baseline = measure_idle_baseline(
        discover(powercap["root"]),
        probe_s=0.25,
        clock=lambda: pkg.t,
        sleep=lambda s: pkg.advance(s, IDLE_W),
        machine_cpu_s=lambda: next(busy),
        cpu_count=8,
    )
    assert baseline.power_w == {"package-0": pytest.approx(IDLE_W)}
    assert "measured at ledger start" in baseline.source and "1 % busy" in baseline.source
    busy = iter([0.0, 1.0])  # 50 % busy: the figure may hold others' work, and says so
    noisy = measure_idle_baseline(
        discover(powercap["root"]), clock=lambda: pkg.t, sleep=lambda s: pkg.advance(s, IDLE_W),
        machine_cpu_s=lambda: next(busy), cpu_count=8,
    )
    assert "set rapl_idle_w" in noisy.source
    configured = idle_baseline(discover(powercap["root"]), idle_w=42.0)
    assert configured.total_w == 42.0 and "rapl_idle_w" in configured.source


def test_near_idle_job_on_an_idle_machine_gets_at_most_5_percent(powercap):
    """The audit's case: 300 J of an idle package; the old attribution charged the job 250 J."""
    domains = discover(powercap["root"])
    pkg = PackageAt(powercap["pkg"])
    baseline = measure_idle_baseline(
        domains, clock=lambda: pkg.t, sleep=lambda s: pkg.advance(s, IDLE_W),
        machine_cpu_s=lambda: 0.0, cpu_count=8,
    )
    new = RaplMeter(domains, idle=baseline, policy=_bare_metal(8))
    old = RaplMeter(domains)
    # 10 s: the job uses 5 ms of CPU per second, the whole machine 6 ms (an idle machine)
    first = tick(0.0, tree=0.0, machine=0.0)
    new.start(first)
    old.start(first)
    for s in range(1, 10):
        pkg.advance(1.0, IDLE_W)
        for meter in (new, old):
            meter.sample(tick(float(s), tree=0.005 * s, machine=0.006 * s))
    pkg.advance(1.0, IDLE_W)
    last = tick(10.0, tree=0.05, machine=0.06)
    charged_new = new.stop(last)["cpu"]
    charged_old = old.stop(last)["cpu"].energy_j
    assert charged_old == pytest.approx(250.0)  # 5/6 of 300 J
    assert charged_new.energy_j <= 0.05 * 300.0
    assert "idle 300.0 J" in charged_new.detail and "cpu-time" in charged_new.detail


def test_busy_job_gets_the_dynamic_part_and_its_share_of_idle(powercap):
    domains = discover(powercap["root"])
    pkg = PackageAt(powercap["pkg"])
    meter = RaplMeter(domains, idle=IdleBaseline({"package-0": IDLE_W}, "set"), policy=_bare_metal(8))
    meter.start(tick(0.0))
    pkg.advance(10.0, IDLE_W + 50.0)  # 10 s at 80 W; the job is 4 of 8 CPUs, all the busy time
    out = meter.stop(tick(10.0, tree=40.0, machine=40.0))["cpu"]
    assert out.energy_j == pytest.approx(500.0 + 300.0 * 0.5)  # dynamic + half the idle


def test_two_jobs_never_claim_more_than_the_package(powercap):
    domains = discover(powercap["root"])
    pkg = PackageAt(powercap["pkg"])
    idle = IdleBaseline({"package-0": IDLE_W}, "set")
    a = RaplMeter(domains, idle=idle, policy=_bare_metal(8))
    b = RaplMeter(domains, idle=idle, policy=_bare_metal(8))
    a.start(tick(0.0))
    b.start(tick(0.0))
    pkg.advance(10.0, 90.0)  # 900 J: 300 J idle, 600 J dynamic
    out_a = a.stop(tick(10.0, tree=60.0, machine=80.0))["cpu"].energy_j  # 6 of the 8 busy CPUs
    out_b = b.stop(tick(10.0, tree=20.0, machine=80.0))["cpu"].energy_j  # 2 of them
    assert out_a == pytest.approx(450.0 + 300.0 * 6 / 8)
    assert out_b == pytest.approx(150.0 + 300.0 * 2 / 8)
    assert out_a + out_b == pytest.approx(900.0)


def test_window_uses_the_configured_idle_power(powercap):
    config = CarbonConfig(
        powercap_root=str(powercap["root"]), sample_interval_s=60, rapl_idle_w=IDLE_W,
        system_root=str(powercap["root"]),  # no /proc/cpuinfo there: a bare-metal machine
    )
    probes = ScriptedProbes(step_s=10.0, tree_cpu_s=lambda t: 0.005 * t, machine_cpu_s=lambda t: 0.006 * t)
    with track("nearly idle", config=config, probes=probes) as fp:
        PackageAt(powercap["pkg"]).advance(10.0, IDLE_W)
    assert fp.components["cpu"].energy_j <= 0.05 * 300.0
    assert "rapl_idle_w 30 W (set)" in fp.components["cpu"].detail
