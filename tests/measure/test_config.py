"""Configuration precedence: flags > environment > lowcarb.toml (cwd, then LOWCARB_HOME) > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowcarb.measure import DEFAULT_PUE, CarbonConfig, load_carbon_config


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in (
        "LOWCARB_REGION",
        "LOWCARB_INTENSITY",
        "LOWCARB_PUE",
        "LOWCARB_EMBODIED_KG",
        "LOWCARB_LIFETIME_YEARS",
        "LOWCARB_RESOURCE_SHARE",
        "LOWCARB_CPU_POWER_W",
        "LOWCARB_SAMPLE_INTERVAL_S",
        "LOWCARB_HARDWARE_PROFILE",
        "LOWCARB_POWERCAP_ROOT",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(clean_env):
    c = load_carbon_config()
    assert c.pue == DEFAULT_PUE and c.region is None and c.intensity_g_per_kwh is None
    assert c.sample_interval_s == 1.0 and c.hardware.lifetime_years == 4.0


def test_precedence(clean_env, monkeypatch):
    (Path(clean_env) / "lowcarb.toml").write_text(
        '[carbon]\nregion = "DE"\npue = 1.2\nembodied_kg = 800\ncpu_power_w = 65\n'
    )
    c = load_carbon_config()
    assert (c.region, c.pue, c.hardware.embodied_kg, c.cpu_power_w) == ("DE", 1.2, 800.0, 65.0)
    monkeypatch.setenv("LOWCARB_PUE", "1.3")
    monkeypatch.setenv("LOWCARB_REGION", "FR")
    c = load_carbon_config()
    assert (c.region, c.pue, c.hardware.embodied_kg) == ("FR", 1.3, 800.0)
    c = load_carbon_config(pue=1.1, region=None, lifetime_years=6)
    assert (c.region, c.pue, c.hardware.lifetime_years) == ("FR", 1.1, 6.0)


def test_region_and_intensity_replace_each_other_across_levels(clean_env, monkeypatch):
    (Path(clean_env) / "lowcarb.toml").write_text("[carbon]\nintensity_g_per_kwh = 30\n")
    assert load_carbon_config().grid() == (30.0, "user-set intensity")
    c = load_carbon_config(region="PL")
    assert c.intensity_g_per_kwh is None and c.grid()[1].startswith("PL:")
    monkeypatch.setenv("LOWCARB_INTENSITY", "99")
    assert load_carbon_config(region="PL").grid()[0] != 99.0
    assert load_carbon_config().grid()[0] == 99.0


def test_home_config_is_second_choice(clean_env, monkeypatch, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LOWCARB_HOME", str(home))
    (home / "lowcarb.toml").write_text("[carbon]\npue = 1.4\n")
    assert load_carbon_config().pue == 1.4
    (Path(clean_env) / "lowcarb.toml").write_text("[carbon]\npue = 1.05\n")
    assert load_carbon_config().pue == 1.05


def test_bad_values_give_clear_errors(clean_env, monkeypatch):
    with pytest.raises(ValueError, match="PUE must be >= 1.0"):
        load_carbon_config(pue=0.9)
    with pytest.raises(ValueError, match="CPU power must be > 0"):
        load_carbon_config(cpu_power_w=-1)
    with pytest.raises(ValueError, match="grid intensity must be >= 0"):
        CarbonConfig(intensity_g_per_kwh=-3)
    with pytest.raises(ValueError, match="sample_interval_s"):
        CarbonConfig(sample_interval_s=0)
    monkeypatch.setenv("LOWCARB_PUE", "abc")
    with pytest.raises(ValueError, match="LOWCARB_PUE='abc' is not a number"):
        load_carbon_config()
    monkeypatch.delenv("LOWCARB_PUE")
    (Path(clean_env) / "lowcarb.toml").write_text("[carbon]\npeu = 1.2\n")
    with pytest.raises(ValueError, match="unknown key.*peu"):
        load_carbon_config()
    (Path(clean_env) / "lowcarb.toml").write_text("[carbon\n")
    with pytest.raises(ValueError, match="cannot read"):
        load_carbon_config()


def test_wrong_types_in_the_file(clean_env):
    (Path(clean_env) / "lowcarb.toml").write_text('[carbon]\npue = "high"\n')
    with pytest.raises(ValueError, match="pue must be a number, got 'high'"):
        load_carbon_config()
    (Path(clean_env) / "lowcarb.toml").write_text("[carbon]\nregion = 33\n")
    with pytest.raises(ValueError, match="region must be a string"):
        load_carbon_config()
    (Path(clean_env) / "lowcarb.toml").write_text('[carbon]\nhardware_profile = "laptop"\nresource_share = 0.5\n')
    c = load_carbon_config()
    assert c.hardware.embodied_kg < 500 and c.hardware.resource_share == 0.5
