"""Print the claims of every benchmarks/results/*.json as one markdown table.

`python benchmarks/summarize.py --write` replaces the table between the markers in RESULTS.md,
so the overview is produced from the results files, never typed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "null" if value is None else str(value)


def claims_table(results_dir: Path = HERE / "results") -> str:
    rows = ["| results file | claim | value | target | met |", "| --- | --- | --- | --- | --- |"]
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        for c in data.get("claims", []):
            met = "reported" if c.get("target") is None else "yes" if c.get("met") else "**no**"
            rows.append(
                f"| {path.name} | `{c['id']}` | {_fmt(c.get('value'))} | "
                f"{c.get('target') or '-'} | {met} |"
            )
    return "\n".join(rows)


def split_markers(text: str, md: Path) -> tuple[str, str, str]:
    """(before, table, after) of a RESULTS.md text: the table is what lies between the markers."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{md} has no {BEGIN} ... {END} markers; add them where the table goes")
    head, rest = text.split(BEGIN, 1)
    table, tail = rest.split(END, 1)
    return head, table.strip("\n"), tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update the table in RESULTS.md")
    args = parser.parse_args()
    table = claims_table()
    if not args.write:
        print(table)
        return
    md = HERE / "RESULTS.md"
    head, _, tail = split_markers(md.read_text(), md)
    md.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


if __name__ == "__main__":
    main()
