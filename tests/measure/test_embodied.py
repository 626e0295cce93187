"""SCI embodied emissions: M = TE x (time / lifetime) x share."""

from __future__ import annotations

import pytest

from lowcarb.measure import CarbonConfig, HardwareProfile, embodied_g, track

from .scripted import ScriptedProbes


def test_sci_worked_example():
    # TE 1,000 kg, 4-year life, 1 hour, full share: 1e6 g x 3600 / (4 x 365.25 x 86400) = 28.52 g
    assert embodied_g(1000.0, 4.0, 3600.0, 1.0) == pytest.approx(28.52, abs=0.01)
    assert embodied_g(1000.0, 4.0, 3600.0, 0.25) == pytest.approx(28.52 / 4, abs=0.01)
    assert embodied_g(1000.0, 4.0, 0.0, 1.0) == 0.0


def test_embodied_errors():
    with pytest.raises(ValueError, match="lifetime"):
        embodied_g(1000.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="resource_share"):
        embodied_g(1000.0, 4.0, 1.0, 1.5)
    with pytest.raises(ValueError, match="embodied_kg"):
        HardwareProfile(embodied_kg=-1.0)
    with pytest.raises(ValueError, match="resource_share"):
        HardwareProfile(resource_share=0.0)


def test_window_embodied_with_configured_and_cpu_time_share(tmp_path):
    hw = HardwareProfile(embodied_kg=1000.0, lifetime_years=4.0, resource_share=1.0)
    config = CarbonConfig(hardware=hw, powercap_root=str(tmp_path), sample_interval_s=1e6)
    with track("hour", config=config, probes=ScriptedProbes(step_s=3600.0)) as fp:
        pass
    assert fp.duration_s == 3600.0
    assert fp.embodied_g == pytest.approx(28.52, abs=0.01)

    # share None: the tree's CPU-time share of the machine's capacity (1 of N logical CPUs busy)
    import os

    n = os.cpu_count() or 1
    # a bare-metal machine (no hypervisor flag, no CPU quota): nothing is reserved
    config = CarbonConfig(
        hardware=HardwareProfile(1000.0, 4.0, None),
        powercap_root=str(tmp_path),
        sample_interval_s=1e6,
        system_root=str(tmp_path),
    )
    probes = ScriptedProbes(step_s=3600.0, tree_cpu_s=lambda t: t)
    with track("one core", config=config, probes=probes) as fp:
        pass
    assert fp.embodied_g == pytest.approx(28.52 / n, abs=0.01)


def test_default_profile_is_the_boavizta_server_median():
    hw = HardwareProfile()
    assert 500 < hw.embodied_kg < 3000 and hw.lifetime_years == 4.0
    assert HardwareProfile.from_profile("laptop").embodied_kg < hw.embodied_kg
    with pytest.raises(ValueError, match="unknown hardware profile"):
        HardwareProfile.from_profile("toaster")
