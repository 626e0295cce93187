"""What a job really holds of the host: VMs, CPU quotas, affinity, and the share it is charged."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowcarb.measure import CarbonConfig, HardwareProfile, track
from lowcarb.measure.embodied import SECONDS_PER_YEAR
from lowcarb.measure.reservation import (
    Reservation,
    SharePolicy,
    cgroup_cpu_limit,
    detect_reservation,
    detect_vm,
    job_processes_on_host,
)

from .scripted import ScriptedProbes

FLAGS_VM = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr hypervisor lahf_lm\n"
FLAGS_METAL = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr lahf_lm\n"


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def machine(tmp_path: Path, *, cpuinfo: str = FLAGS_METAL, cgroup: str = "0::/\n") -> Path:
    root = tmp_path / "sys-root"
    write(root, "proc/cpuinfo", cpuinfo)
    write(root, "proc/self/cgroup", cgroup)
    (root / "sys/fs/cgroup").mkdir(parents=True, exist_ok=True)
    return root


def test_vm_evidence(tmp_path):
    assert detect_vm(machine(tmp_path / "metal")) == ""
    assert "hypervisor flag" in detect_vm(machine(tmp_path / "vm", cpuinfo=FLAGS_VM))
    root = machine(tmp_path / "kvm")
    write(root, "sys/class/dmi/id/sys_vendor", "QEMU\n")
    write(root, "sys/class/dmi/id/product_name", "Standard PC (Q35 + ICH9, 2009)\n")
    assert detect_vm(root).startswith("DMI: QEMU")
    ec2 = machine(tmp_path / "ec2")
    write(ec2, "sys/class/dmi/id/sys_vendor", "Amazon EC2\n")
    write(ec2, "sys/class/dmi/id/product_name", "m5.metal\n")
    assert detect_vm(ec2) == ""  # bare-metal instances are the whole host
    write(ec2, "sys/class/dmi/id/product_name", "m5.large\n")
    assert detect_vm(ec2) == "DMI: Amazon EC2 m5.large"


def test_cgroup_v2_quota_takes_the_tightest_ancestor(tmp_path):
    root = machine(tmp_path, cgroup="0::/kubepods/pod1/ctr\n")
    write(root, "sys/fs/cgroup/kubepods/cpu.max", "800000 100000\n")  # 8 CPUs for all pods
    write(root, "sys/fs/cgroup/kubepods/pod1/cpu.max", "250000 100000\n")  # 2.5 for this pod
    write(root, "sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n")  # no own limit
    cpus, why = cgroup_cpu_limit(root)
    assert cpus == 2.5 and "250000/100000" in why and "pod1" in why
    assert cgroup_cpu_limit(machine(tmp_path / "free")) is None


def test_cgroup_v1_quota_and_missing_hierarchy(tmp_path):
    root = machine(tmp_path, cgroup="4:memory:/x\n2:cpu,cpuacct:/docker/abc\n")
    write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000\n")
    write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    # /docker/abc is the host's path; inside the container only the mount root exists
    assert cgroup_cpu_limit(root)[0] == 2.0
    write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_limit(root) is None


def test_reservation_of_a_container_quota_and_an_affinity_mask(tmp_path):
    root = machine(tmp_path, cgroup="0::/\n")
    write(root, "sys/fs/cgroup/cpu.max", "400000 100000\n")
    config = CarbonConfig(system_root=str(root))
    r = detect_reservation(config, cpu_count=64, affinity=set(range(64)))
    assert (r.visible_cpus, r.reserved_cpus, r.host_cpus, r.vm) == (64, 4.0, 64.0, "")
    assert r.reserved and "4 CPUs" in r.describe()
    r = detect_reservation(config, cpu_count=64, affinity={0, 1})
    assert r.reserved_cpus == 2.0 and "affinity: 2 of 64" in r.describe()
    bare = detect_reservation(CarbonConfig(system_root=str(machine(tmp_path / "b"))), cpu_count=8, affinity=set(range(8)))
    assert not bare.reserved and bare.describe() == "nothing reserved"


def test_vm_host_size_default_and_override(tmp_path):
    root = machine(tmp_path, cpuinfo=FLAGS_VM)
    r = detect_reservation(CarbonConfig(system_root=str(root)), cpu_count=2, affinity={0, 1})
    assert (r.reserved_cpus, r.host_cpus) == (2.0, 96.0)  # the server profile's default host
    hw = HardwareProfile(host_logical_cpus=192)
    r = detect_reservation(CarbonConfig(system_root=str(root), hardware=hw), cpu_count=2, affinity={0, 1})
    assert r.host_cpus == 192.0 and "host_logical_cpus 192" in r.host_source
    laptop = HardwareProfile.from_profile("laptop")  # no host size known: the VM stands for it
    r = detect_reservation(CarbonConfig(system_root=str(root), hardware=laptop), cpu_count=2, affinity={0, 1})
    assert r.host_cpus == 2.0 and "host size unknown" in r.host_source
    with pytest.raises(ValueError, match="host_logical_cpus must be >= 1"):
        HardwareProfile(host_logical_cpus=0)


def test_worked_example_two_vcpus_of_a_96_cpu_host():
    """README's example: a 2-vCPU VM, 1 hour, the median Boavizta server as host."""
    hw = HardwareProfile(embodied_kg=1215.4, lifetime_years=4.0)
    vm = Reservation(2, 2.0, 96.0, vm="hypervisor flag in /proc/cpuinfo", host_source="default")
    grams, detail = SharePolicy(hw, vm).embodied(3600.0, cpu_time_s=36.0)  # 1 % busy: no matter
    expected = 1215.4 / 96 * 2 * 1000 * 3600 / (4 * SECONDS_PER_YEAR)
    assert grams == pytest.approx(expected) and grams == pytest.approx(0.7222, abs=1e-4)
    assert "reserved" in detail and "2 of 96" in detail and "VM (hypervisor flag" in detail
    # The old rule charged a job keeping both vCPUs busy a whole server (its CPU-time share of
    # the 2 CPUs it sees): 48 times (96 / 2) too much.
    old = 1215.4 * 1000 * 3600 / (4 * SECONDS_PER_YEAR) * 1.0
    assert old / grams == pytest.approx(48.0)


def test_share_bases(monkeypatch):
    hw = HardwareProfile(embodied_kg=960.0, lifetime_years=4.0)
    bare = Reservation(8, 8.0, 8.0)
    m = SharePolicy(hw, bare).share(duration_s=10.0, cpu_time_s=20.0)  # 2 CPUs busy on average
    assert (m.basis, m.cpus, m.share) == ("cpu-time", 2.0, 0.25)
    quota = Reservation(64, 4.0, 64.0, limits=("CPU quota 400000/100000 = 4 CPUs",))
    m = SharePolicy(hw, quota).share(10.0, cpu_time_s=0.1)  # reserved, whether busy or not
    assert (m.basis, m.share) == ("reserved", 4 / 64)
    m = SharePolicy(hw, quota, job_processes=4).share(10.0, 0.1)  # 4 ranks of one job share it
    assert m.cpus == 1.0 and "split by 4 processes" in m.reason
    fixed = SharePolicy(HardwareProfile(960.0, 4.0, resource_share=0.5), quota).share(10.0, 0.1)
    assert (fixed.basis, fixed.share) == ("configured", 0.5)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert job_processes_on_host() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "zero")
    assert job_processes_on_host() == 1


def test_embodied_per_vcpu_override():
    hw = HardwareProfile(embodied_kg=1215.4, lifetime_years=4.0, embodied_kg_per_vcpu=30.0)
    vm = Reservation(2, 2.0, 96.0, vm="x")
    grams, detail = SharePolicy(hw, vm).embodied(3600.0, 0.0)
    assert grams == pytest.approx(30.0 * 2 * 1000 * 3600 / (4 * SECONDS_PER_YEAR))
    assert "embodied_kg_per_vcpu" in detail


def test_window_in_a_scripted_vm_says_which_share(tmp_path):
    root = machine(tmp_path, cpuinfo=FLAGS_VM)
    config = CarbonConfig(system_root=str(root), powercap_root=str(tmp_path), sample_interval_s=1e6)
    with track("vm job", config=config, probes=ScriptedProbes(step_s=3600.0)) as fp:
        pass
    visible = detect_reservation(config).reserved_cpus
    hw = config.hardware
    expected = hw.embodied_kg / 96 * visible * 1000 * 3600 / (hw.lifetime_years * SECONDS_PER_YEAR)
    assert fp.embodied_g == pytest.approx(expected)
    assert "reserved" in fp.embodied_detail and "hypervisor flag" in fp.embodied_detail


def test_settings_reach_the_hardware_profile(monkeypatch):
    from lowcarb.measure import load_carbon_config

    monkeypatch.setenv("LOWCARB_HOST_LOGICAL_CPUS", "128")
    monkeypatch.setenv("LOWCARB_RAPL_IDLE_W", "35")
    config = load_carbon_config(embodied_kg_per_vcpu=10.0)
    assert config.hardware.host_logical_cpus == 128 and config.hardware.embodied_kg_per_vcpu == 10.0
    assert config.rapl_idle_w == 35.0
    assert load_carbon_config(hardware_profile="laptop").hardware.host_logical_cpus == 128
    monkeypatch.delenv("LOWCARB_HOST_LOGICAL_CPUS")
    assert load_carbon_config(hardware_profile="laptop").hardware.host_logical_cpus is None
    with pytest.raises(ValueError, match="rapl_idle_w must be >= 0"):
        CarbonConfig(rapl_idle_w=-1.0)
