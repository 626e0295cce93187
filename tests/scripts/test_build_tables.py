"""scripts/build_tables.py rebuilds exactly the packaged tables from the raw data."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGED = ROOT / "src" / "lowcarb" / "measure" / "tables"
DATA = Path("/work/shared/data")
ISO = Path("/usr/share/iso-codes/json/iso_3166-1.json")


def _load_script():
    spec = importlib.util.spec_from_file_location("build_tables", ROOT / "scripts" / "build_tables.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rebuild_matches_the_packaged_tables(tmp_path, capsys):
    build = _load_script()
    assert build.main(["--data", str(DATA), "--iso", str(ISO), "--out", str(tmp_path)]) == 0
    for packaged in sorted(PACKAGED.iterdir()):
        if packaged.suffix in (".csv", ".md"):
            assert (tmp_path / packaged.name).read_text() == packaged.read_text(), packaged.name
    assert "cloud regions" in capsys.readouterr().out


def test_cloud_table_rows(tmp_path):
    build = _load_script()
    build.main(["--data", str(DATA), "--iso", str(ISO), "--out", str(tmp_path)])
    rows = list(csv.DictReader((tmp_path / "grid_cloud.csv").open()))
    regions = {(r["provider"], r["region"]) for r in rows}
    assert ("gcp", "me-central1") in regions and ("gcp", "me-cenrtal1") not in regions
    assert len(regions) == len(rows)  # no duplicates
    assert all(r["year"].isdigit() and r["source"] and float(r["intensity_g_per_kwh"]) > 0 for r in rows)
    by_provider = {p: sum(r["provider"] == p for r in rows) for p in ("gcp", "aws", "azure")}
    assert by_provider["aws"] >= 30 and by_provider["azure"] >= 50 and by_provider["gcp"] == 40
    hardware = {r["profile"]: r for r in csv.DictReader((tmp_path / "hardware.csv").open())}
    assert hardware["server"]["host_logical_cpus"] == "96"  # 2 sockets (median) x 48
