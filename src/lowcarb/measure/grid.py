"""Grid carbon intensity from the packaged offline tables (no network, no ../shared at run time).

A region is a country (ISO 3166-1 alpha-2 or alpha-3 code, its name, or a common alias such as
`uk`) or a cloud region written `provider:region` (`gcp:europe-west1`, `aws:us-east-1`,
`azure:westeurope`, or the provider's display name, `azure:West Europe`). Every row has a year and
a source. Unknown regions raise a ConfigError that names the closest matches, so a typo is a
one-line fix.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from lowcarb.errors import ConfigError


@dataclass(frozen=True)
class GridRegion:
    key: str  # canonical key: ISO alpha-2 for countries ("FR"), "provider:region" for clouds
    intensity_g_per_kwh: float
    source: str
    kind: str  # "country" | "cloud" | "default"
    iso3: str = ""
    name: str = ""  # country name, or the cloud region's city
    year: int | None = None
    provider: str = ""
    cloud_region: str = ""
    display_name: str = ""  # the provider's name for a cloud region ("US East (N. Virginia)")


def _read_table(filename: str) -> list[dict[str, str]]:
    text = (resources.files("lowcarb.measure") / "tables" / filename).read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


@lru_cache(maxsize=1)
def default_region() -> GridRegion:
    """The world average, used when no region and no intensity are configured."""
    (row,) = _read_table("grid_default.csv")
    return GridRegion(
        key="world",
        intensity_g_per_kwh=float(row["intensity_g_per_kwh"]),
        source=f"world average ({row['source']})",
        kind="default",
        name="World",
    )


def _place_name(city: str, country: str) -> str:
    # Providers give a city, a state or only the country ("Netherlands"): never say it twice.
    return country if not city or city == country else f"{city}, {country}"


@lru_cache(maxsize=1)
def all_regions() -> tuple[GridRegion, ...]:
    """Every packaged region: countries first (by name), then cloud regions."""
    countries = [
        GridRegion(
            key=r["iso2"] or r["iso3"],
            intensity_g_per_kwh=float(r["intensity_g_per_kwh"]),
            source=f"{r['source']}, {r['year']}",
            kind="country",
            iso3=r["iso3"],
            name=r["name"],
            year=int(r["year"]),
        )
        for r in _read_table("grid_countries.csv")
    ]
    countries.sort(key=lambda g: g.name)
    iso3_names = {c.iso3: c.name for c in countries}
    clouds = [
        GridRegion(
            key=f"{r['provider']}:{r['region']}",
            intensity_g_per_kwh=float(r["intensity_g_per_kwh"]),
            source=f"{r['source']}, {r['year']}",
            kind="cloud",
            iso3=r["iso3"],
            name=_place_name(r["city"], iso3_names.get(r["iso3"], r["iso3"])),
            year=int(r["year"]),
            provider=r["provider"],
            cloud_region=r["region"],
            display_name=r["display_name"],
        )
        for r in _read_table("grid_cloud.csv")
    ]
    return (*countries, default_region(), *clouds)


def _norm(text: str) -> str:
    return " ".join(text.strip().lower().replace("_", " ").split())


@lru_cache(maxsize=1)
def _alt_names() -> dict[str, str]:
    """iso3 -> the other common name of the country (iso-codes' common_name), where it differs."""
    return {r["iso3"]: r["alt_name"] for r in _read_table("grid_countries.csv") if r["alt_name"]}


@lru_cache(maxsize=1)
def _index() -> dict[str, GridRegion]:
    index: dict[str, GridRegion] = {}
    alt = _alt_names()
    for g in all_regions():
        aliases = [g.key]
        if g.kind == "country":
            aliases += [g.iso3, g.name, alt.get(g.iso3, "")]
        elif g.kind == "cloud" and g.display_name:
            aliases.append(f"{g.provider}:{g.display_name}")
        for alias in aliases:
            if alias:
                index.setdefault(_norm(alias), g)
    by_key = {g.key: g for g in all_regions()}
    for r in _read_table("grid_aliases.csv"):
        # An ISO code always wins over an alias ("uk" is no code, so it can mean GB).
        index.setdefault(_norm(r["alias"]), by_key[r["key"]])
    return index


def lookup_region(region: str) -> GridRegion:
    """The packaged region named by `region` (code, name, alias or provider:region), else a
    ConfigError (a ValueError) naming the close matches."""
    if not region or not region.strip():
        raise ConfigError("empty region: give a country code (FR, FRA), a name, or provider:region")
    found = _index().get(_norm(region))
    if found is not None:
        return found
    close = difflib.get_close_matches(_norm(region), list(_index()), n=5, cutoff=0.6)
    # Substring hits help with partial names ("united" -> United States, United Kingdom).
    close += [k for k in _index() if _norm(region) in k and k not in close][: 5 - len(close)]
    names = dict.fromkeys(f"{_index()[k].key} ({_index()[k].name})" for k in close)
    hint = "close matches: " + ", ".join(names) if names else "no close match"
    raise ConfigError(
        f"unknown region {region!r}; {hint}. `lowcarb regions QUERY` lists the regions, "
        "or give the intensity directly with --intensity G_PER_KWH"
    )


def search_regions(query: str | None = None) -> list[GridRegion]:
    """Regions whose key, alpha-3 code, name or display name contains `query` (all when None)."""
    if not query:
        return list(all_regions())
    q = _norm(query)
    return [
        g
        for g in all_regions()
        if any(q in _norm(text) for text in (g.key, g.iso3, g.name, g.display_name))
    ]
