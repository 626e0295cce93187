"""RAPL on a scripted powercap tree: package + dram, wraparound, attribution, permission denied."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowcarb.measure import CarbonConfig, track
from lowcarb.measure.rapl import RaplMeter, RaplUnavailable, discover
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
