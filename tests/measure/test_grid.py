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
