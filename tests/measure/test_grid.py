"""Grid intensity lookups: alpha-2, alpha-3, names, cloud regions, close matches."""

from __future__ import annotations

import pytest

from lowcarb.measure import CarbonConfig, lookup_region, search_regions
from lowcarb.measure.grid import all_regions, default_region


def test_country_by_alpha2_alpha3_and_name():
    fr = lookup_region("FR")
    assert fr.iso3 == "FRA" and fr.kind == "country"
    assert lookup_region("fra") == fr == lookup_region("  France ")
    assert 0 < fr.intensity_g_per_kwh < lookup_region("PL").intensity_g_per_kwh
    assert "CC BY 4.0" in fr.source


def test_cloud_region():
    g = lookup_region("gcp:europe-west1")
    assert g.kind == "cloud" and g.provider == "gcp" and g.iso3 == "BEL"
    assert g.intensity_g_per_kwh > 0


def test_unknown_region_lists_close_matches():
    with pytest.raises(ValueError, match=r"close matches: .*FR \(France\)"):
        lookup_region("Frnace")
    with pytest.raises(ValueError, match="gcp:europe-west1"):
        lookup_region("gcp:europe-wst1")
    with pytest.raises(ValueError, match="unknown region"):
        CarbonConfig(region="Atlantis")


def test_world_average_is_the_default():
    assert default_region().intensity_g_per_kwh == 475.0
    intensity, source = CarbonConfig().grid()
    assert intensity == 475.0 and "world average" in source
    assert CarbonConfig(intensity_g_per_kwh=20.0).grid() == (20.0, "user-set intensity")


def test_table_is_complete_and_searchable():
    regions = all_regions()
    assert sum(g.kind == "country" for g in regions) > 200
    assert sum(g.kind == "cloud" for g in regions) >= 40
    assert all(g.intensity_g_per_kwh >= 0 for g in regions)
    names = {g.name for g in search_regions("united")}
    assert {"United States", "United Kingdom"} <= names


def test_every_cloud_aws_and_azure_by_country():
    aws = lookup_region("aws:us-east-1")
    assert (aws.kind, aws.provider, aws.iso3) == ("cloud", "aws", "USA")
    assert aws.intensity_g_per_kwh == lookup_region("US").intensity_g_per_kwh
    assert aws.year == lookup_region("US").year and "docs.aws.amazon.com" in aws.source
    assert aws.display_name == "US East (N. Virginia)"
    azure = lookup_region("azure:westeurope")
    assert azure.iso3 == "NLD" and azure.intensity_g_per_kwh == lookup_region("NL").intensity_g_per_kwh
    assert lookup_region("azure:West Europe") == azure  # the provider's display name works too
    assert lookup_region("aws:ap-east-1").iso3 == "HKG"  # Hong Kong, not the US
    assert lookup_region("aws:eu-west-3").name == "Paris, France"
    providers = {g.provider for g in all_regions() if g.kind == "cloud"}
    assert providers == {"gcp", "aws", "azure"}


def test_gcp_typo_fixed_and_year_on_every_row():
    g = lookup_region("gcp:me-central1")  # spelled me-cenrtal1 in the source file
    assert g.iso3 == "QAT" and g.year == 2023
    with pytest.raises(ValueError, match="gcp:me-central1"):
        lookup_region("gcp:me-cenrtal1")
    assert all(g.year for g in all_regions() if g.kind in ("country", "cloud"))
    assert all(str(g.year) in g.source for g in all_regions() if g.kind == "cloud")


def test_country_aliases():
    gb = lookup_region("GB")
    assert lookup_region("uk") == lookup_region("UK") == lookup_region("England") == gb
    assert lookup_region("UA").name == "Ukraine"  # the ISO code keeps its meaning
    assert lookup_region("holland").key == "NL" and lookup_region("korea").key == "KR"
    assert lookup_region("Czech Republic").key == "CZ"
    with pytest.raises(ValueError, match="unknown region"):
        lookup_region("ukk")


def test_unknown_region_is_a_config_error():
    from lowcarb.errors import ConfigError

    with pytest.raises(ConfigError, match="close matches"):
        lookup_region("aws:us-east-9")
