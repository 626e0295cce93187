"""Build the packaged carbon tables in src/lowcarb/measure/tables/ from the raw data.

Run at build time only (the product reads the packaged CSVs, never ../shared):

    .venv/bin/python scripts/build_tables.py [--data /work/shared/data] [--iso /usr/share/iso-codes/json/iso_3166-1.json]

Inputs:
- grid/global_energy_mix.json: per-country carbon intensity (Our World in Data / Ember, CC BY 4.0,
  as packaged by the MIT-licensed CodeCarbon project), keyed by ISO 3166-1 alpha-3.
- grid/carbon_intensity_per_source.json: the world average (IEA 2019), our default intensity.
- grid/cloud_region_intensity.csv: Google Cloud's grid carbon intensity per region (identical to
  Google's published 2023 yearly file, github.com/GoogleCloudPlatform/region-carbon-info); the
  region `me-cenrtal1` of that file is spelled `me-central1` here.
- scripts/cloud_regions.csv (next to this script): the AWS and Azure regions and the country each
  lies in, from the providers' public region lists (URL on every row); their intensity is that
  country's (global_energy_mix.json) with its year.
- embodied/boavizta-data-us.csv: manufacturers' product carbon footprints (Boavizta, ODbL 1.0).
- the Debian iso-codes ISO 3166-1 table, only to add alpha-2 codes next to the alpha-3 codes.

Outputs: grid_countries.csv, grid_cloud.csv, grid_aliases.csv, grid_default.csv, hardware.csv,
gpu.csv, ATTRIBUTION.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "lowcarb" / "measure" / "tables"
CLOUD_REGIONS = Path(__file__).resolve().with_name("cloud_regions.csv")
# The year of Google's figures in grid/cloud_region_intensity.csv: every value equals the 2023
# yearly file of github.com/GoogleCloudPlatform/region-carbon-info.
GCP_YEAR = 2023
# Misspellings in the source data, fixed here so that the packaged table has the real names.
REGION_TYPOS = {"me-cenrtal1": "me-central1"}
# Names people use that are neither the ISO code nor the table's name of the country.
COUNTRY_ALIASES = {
    "uk": "GB",
    "great britain": "GB",
    "britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "america": "US",
    "united states of america": "US",
    "holland": "NL",
    "korea": "KR",
    "republic of korea": "KR",
    "czech republic": "CZ",
    "uae": "AE",
    "ivory coast": "CI",
    "burma": "MM",
    "turkiye": "TR",
    "swaziland": "SZ",
    "cabo verde": "CV",
    "viet nam": "VN",
    "russian federation": "RU",
}
# Logical CPUs per socket of the typical host: 24 cores with simultaneous multithreading, the CPU
# of Boavizta's default server; times the data's median socket count it gives the host size that
# a VM's vCPUs are a share of (96, also the vCPUs of the largest general-purpose AWS instances,
# which Cloud Carbon Footprint takes as the host).
LOGICAL_CPUS_PER_SOCKET = 48
OWID_SOURCE = "Our World in Data / Ember (CC BY 4.0), via CodeCarbon global_energy_mix.json"
BOAVIZTA_SOURCE = "Boavizta boavizta-data-us.csv (ODbL 1.0)"
# Profiles derived from Boavizta: name -> (category, subcategory). Medians are robust to the few
# very large or very small products in each group.
PROFILES = {
    "server": ("Datacenter", "Server"),
    "desktop": ("Workplace", "Desktop"),
    "laptop": ("Workplace", "Laptop"),
    "workstation": ("Workplace", "Workstation"),
}


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def build_countries(data: Path, iso_path: Path, out: Path) -> int:
    mix = json.loads((data / "grid" / "global_energy_mix.json").read_text())
    iso = json.loads(iso_path.read_text())["3166-1"]
    alpha2 = {c["alpha_3"]: c["alpha_2"] for c in iso}
    common = {c["alpha_3"]: c.get("common_name", "") for c in iso}
    rows = []
    for iso3, rec in sorted(mix.items()):
        if rec.get("carbon_intensity") is None:
            continue
        rows.append(
            [
                alpha2.get(iso3, ""),
                iso3,
                rec["country_name"],
                common.get(iso3, ""),
                rec["year"],
                round(float(rec["carbon_intensity"]), 3),
                OWID_SOURCE,
            ]
        )
    header = ["iso2", "iso3", "name", "alt_name", "year", "intensity_g_per_kwh", "source"]
    _write_csv(out / "grid_countries.csv", header, rows)
    return len(rows)


def build_cloud(data: Path, out: Path) -> int:
    """GCP rows from Google's figures per region; AWS and Azure rows from the providers' region
    lists (scripts/cloud_regions.csv), at the intensity of the country each region lies in."""
    path = data / "grid" / "cloud_region_intensity.csv"
    with path.open(encoding="utf-8-sig") as f:
        recs = list(csv.DictReader(f))
    rows = []
    for r in recs:
        if not r["impact"].strip():
            continue
        region = r["region"].strip().lower()
        rows.append(
            [
                r["provider"].strip().lower(),
                REGION_TYPOS.get(region, region),
                "",
                r["countryIsoCode"].strip().upper(),
                r["city"].strip(),
                GCP_YEAR,
                float(r["impact"]),
                f"Google Cloud region carbon data {GCP_YEAR}, grid carbon intensity of the region "
                f"({r['source'].strip()})",
            ]
        )
    mix = json.loads((data / "grid" / "global_energy_mix.json").read_text())
    with CLOUD_REGIONS.open(encoding="utf-8") as f:
        for r in csv.DictReader(f):
            country = mix.get(r["iso3"])
            if country is None or country.get("carbon_intensity") is None:
                raise SystemExit(f"build_tables: no intensity for {r['iso3']} ({r['provider']}:{r['region']})")
            rows.append(
                [
                    r["provider"],
                    r["region"],
                    r["display_name"],
                    r["iso3"],
                    r["location"],
                    int(country["year"]),
                    round(float(country["carbon_intensity"]), 3),
                    f"{country['country_name']} average, {OWID_SOURCE}, {country['year']}; "
                    f"location from the provider's region list ({r['source']})",
                ]
            )
    keys = [(r[0], r[1]) for r in rows]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise SystemExit(f"build_tables: duplicated cloud regions {sorted(dupes)}")
    header = [
        "provider", "region", "display_name", "iso3", "city", "year", "intensity_g_per_kwh", "source"
    ]
    _write_csv(out / "grid_cloud.csv", header, rows)
    return len(rows)


def build_aliases(out: Path) -> int:
    """Common names that are not a country's ISO code or name (`uk` is GB, not Ukraine)."""
    rows = [[alias, key] for alias, key in sorted(COUNTRY_ALIASES.items())]
    _write_csv(out / "grid_aliases.csv", ["alias", "key"], rows)
    return len(rows)


def build_default(data: Path, out: Path) -> float:
    per_source = json.loads((data / "grid" / "carbon_intensity_per_source.json").read_text())
    value = float(per_source["world_average"])
    source = "IEA Global Energy & CO2 Status Report 2019: " + per_source["world_average_source"]
    _write_csv(out / "grid_default.csv", ["key", "intensity_g_per_kwh", "source"], [["world", value, source]])
    return value


def build_hardware(data: Path, out: Path) -> list[list[object]]:
    path = data / "embodied" / "boavizta-data-us.csv"
    with path.open(encoding="utf-8-sig") as f:
        recs = list(csv.DictReader(f))
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    sockets: list[float] = []
    for r in recs:
        if (r["category"], r["subcategory"]) == PROFILES["server"] and r["number_cpu"].strip():
            sockets.append(float(r["number_cpu"]))
        for name, (cat, sub) in PROFILES.items():
            if r["category"] == cat and r["subcategory"] == sub:
                try:
                    # Manufacturing share of the product footprint: the "TE" of SCI.
                    te = float(r["gwp_total"]) * float(r["gwp_manufacturing_ratio"])
                    life = float(r["lifetime"])
                except ValueError:
                    continue
                groups[name].append((te, life))
    rows = []
    for name in PROFILES:
        vals = groups[name]
        if not vals:
            continue
        # Only servers host VMs: their host size is what a vCPU is a share of.
        host = (
            int(statistics.median(sockets) * LOGICAL_CPUS_PER_SOCKET) if name == "server" else ""
        )
        rows.append(
            [
                name,
                len(vals),
                round(statistics.median(v[0] for v in vals), 1),
                statistics.median(v[1] for v in vals),
                host,
                f"median of gwp_total x gwp_manufacturing_ratio and of lifetime over "
                f"{PROFILES[name][0]}/{PROFILES[name][1]} products, {BOAVIZTA_SOURCE}"
                + (
                    f"; host_logical_cpus: median number_cpu ({statistics.median(sockets):g} "
                    f"sockets, n={len(sockets)}) x {LOGICAL_CPUS_PER_SOCKET} logical CPUs per socket"
                    if host
                    else ""
                ),
            ]
        )
    header = ["profile", "n_products", "embodied_kg", "lifetime_years", "host_logical_cpus", "source"]
    _write_csv(out / "hardware.csv", header, rows)
    return rows


# Embodied footprint of one GPU card: Boavizta's figure for an NVIDIA A100 80GB (kgCO2e: extraction,
# manufacturing, transport), computed by Boavizta for GenAI Impact's EcoLogits methodology
# (https://ecologits.ai/latest/methodology/llm_inference/, CC BY-SA 4.0). boavizta-data-us.csv
# lists servers and workplace devices but no GPU card, so no median can be taken from it.
GPU_EMBODIED_KG = 143.0
# Boavizta's default GPU lifetime (its GPU component archetype: 26,280 hours, 3 years).
GPU_LIFETIME_YEARS = 3.0
GPU_SOURCE = (
    "Boavizta's embodied footprint of an NVIDIA A100 80GB card, as published in GenAI Impact's "
    "EcoLogits methodology (CC BY-SA 4.0); 3-year lifetime, Boavizta's GPU default"
)


def build_gpu(data: Path, out: Path) -> list[object]:
    """gpu.csv: the default embodied footprint and lifetime of one GPU card."""
    path = data / "embodied" / "boavizta-data-us.csv"
    with path.open(encoding="utf-8-sig") as f:
        cards = [r for r in csv.DictReader(f) if "gpu" in r["subcategory"].lower()]
    if cards:  # the constant above was chosen because the file had none: look again
        raise SystemExit(f"build_tables: {path} now lists {len(cards)} GPU card(s); derive gpu.csv from them")
    row: list[object] = ["default", GPU_EMBODIED_KG, GPU_LIFETIME_YEARS, GPU_SOURCE]
    _write_csv(out / "gpu.csv", ["gpu", "embodied_kg", "lifetime_years", "source"], [row])
    return row


ATTRIBUTION = """# Attribution of the packaged tables

Built by `scripts/build_tables.py`; lowcarb reads only these files at run time.

- `grid_countries.csv`: carbon intensity of electricity per country (gCO2e/kWh, mostly 2022-2023),
  Our World in Data, based on Ember's Yearly Electricity Data, licensed CC BY 4.0
  (https://ourworldindata.org/grapher/carbon-intensity-electricity), as packaged in
  `global_energy_mix.json` by the CodeCarbon project (MIT licence). ISO 3166-1 alpha-2 codes
  added from the Debian iso-codes package.
- `grid_cloud.csv`: carbon intensity per cloud region, each row with its year and source. gcp rows:
  Google Cloud region carbon data 2023 (grid carbon intensity per region, as published by Google
  and collected by the CodeCarbon project, MIT licence). aws and azure rows: the country each
  region lies in, from the providers' public region lists
  (https://docs.aws.amazon.com/global-infrastructure/latest/regions/aws-regions.html,
  https://learn.microsoft.com/azure/reliability/regions-list), at that country's intensity from
  `grid_countries.csv` (a country average: the providers publish no per-region grid figure).
- `grid_aliases.csv`: common country names that are not ISO codes (`uk` -> GB), lowcarb's own.
- `grid_default.csv`: world average 475 gCO2e/kWh, IEA Global Energy & CO2 Status Report 2019.
- `hardware.csv`: embodied (manufacturing) footprints, medians over the products of each group in
  Boavizta's `boavizta-data-us.csv`, licensed ODbL 1.0 (https://github.com/Boavizta/environmental-footprint-data).
  Lifetimes are the medians of the manufacturers' stated lifetimes (Boavizta's default: 4 years
  for servers). `host_logical_cpus` (servers): the median socket count of those servers times 48
  logical CPUs per socket (24 cores with SMT), the host size a VM's vCPUs are a share of.
- `gpu.csv`: embodied footprint of one GPU card, 143 kgCO2e, Boavizta's figure for an NVIDIA A100
  80GB as published in GenAI Impact's EcoLogits methodology (CC BY-SA 4.0,
  https://ecologits.ai/latest/methodology/llm_inference/), over Boavizta's 3-year GPU lifetime.
  Boavizta's product table lists no GPU card, so one figure serves every GPU model.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--iso", type=Path, default=Path("/usr/share/iso-codes/json/iso_3166-1.json"))
    ap.add_argument("--out", type=Path, default=OUT, help="where to write (default: the package)")
    args = ap.parse_args(argv)
    for p in (args.data / "grid", args.data / "embodied", args.iso):
        if not p.exists():
            print(f"build_tables: {p} not found; pass --data / --iso", file=sys.stderr)
            return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    n_countries = build_countries(args.data, args.iso, out)
    n_cloud = build_cloud(args.data, out)
    n_aliases = build_aliases(out)
    world = build_default(args.data, out)
    hw = build_hardware(args.data, out)
    gpu = build_gpu(args.data, out)
    (out / "ATTRIBUTION.md").write_text(ATTRIBUTION)
    print(
        f"{n_countries} countries, {n_cloud} cloud regions, {n_aliases} aliases, "
        f"world default {world} g/kWh"
    )
    for row in hw:
        print(f"hardware {row[0]}: {row[2]} kg over {row[3]} years (n={row[1]})")
    print(f"gpu {gpu[0]}: {gpu[1]} kg over {gpu[2]} years")
    return 0


if __name__ == "__main__":
    sys.exit(main())
