"""Pipeline verbs: run a recipe, render a stored run's report, compare two runs."""

from __future__ import annotations

import argparse
import sys

from lowcarb.cli import common


def add_run(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "run",
        help="run a recipe (default: train and evaluate the baseline CNN on digits) and report",
        description=(
            "Run a recipe: load the data and model, run every stage inside the carbon ledger, "
            "evaluate each model it produces, save the run and write report.html / report.md."
        ),
    )
    p.add_argument(
        "recipe",
        nargs="?",
        help="recipe YAML file (default: the packaged digits recipe); relative data: paths in it "
        "(train, dev, test) are read from the recipe file's folder",
    )
    common.add_overrides_flag(
        p,
        "override a recipe field, e.g. --set train.epochs=2 --set data.train=my.csv "
        "(stage settings: --set stages.lowrank.param_ratio=0.5); repeatable; a path given here "
        "is relative to the working directory",
    )
    common.add_recipe_run_flags(p, "no progress bars or stage lines (CI)")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.text import Text

    from lowcarb.pipeline import load_recipe, run_recipe
    from lowcarb.report.escape import plain
    from lowcarb.report.formatting import fmt_g, fmt_j
    from lowcarb.report.summary import busy_warnings, measurement_notes
    from lowcarb.report.terminal import final_table, payback_lines

    recipe = load_recipe(args.recipe, common.recipe_overrides(args))
    console = common.make_console()

    def on_stage(record) -> None:  # one line per finished ledger window
        fp = record.footprint or {}
        console.print(
            Text.assemble(
                ("done", "green"),
                f" {plain(record.label):<22} {fp.get('duration_s', 0.0):7.1f} s  "
                f"{fmt_j(fp.get('energy_j')):>9}  {fmt_g(fp.get('total_g')):>9} CO2e",
            )
        )

    result = run_recipe(
        recipe,
        out_dir=args.out,
        quiet=args.quiet,
        store=common.open_store(args),
        on_stage=None if args.quiet else on_stage,
        command=common.command_line(),
    )
    console.print(final_table(result.run))
    for line in measurement_notes(result.run):
        console.print(plain(line))
    for line in payback_lines(result.run):
        console.print(f"payback: {line}")
    for line in busy_warnings(result.run):
        print(f"lowcarb run: warning: {plain(line)}", file=sys.stderr)
    report = result.reports.get("html") or result.reports.get("md")
    if report is not None:
        console.print(f"report: {plain(report)}")
    return common.run_outcome("run", result)


def add_report(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "report",
        help="write the report of a stored run (HTML or markdown)",
        description="Render a stored recipe run as one self-contained HTML file or markdown.",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix (see `lowcarb runs`)")
    p.add_argument("--format", choices=("html", "md"), default="html", help="default: html")
    p.add_argument("--out", metavar="FILE", help="where to write it (default: the run's folder)")
    common.add_store_flag(p)
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from lowcarb.report.escape import plain
    from lowcarb.report.write import check_report_file, write_run_report

    if args.out:
        check_report_file(args.out, args.format)  # before the store is opened
    store = common.open_store_for_runs(args, [args.run_id])
    written = write_run_report(store, args.run_id, args.format, args.out)
    if args.format == "md":
        print(written.text)
    print(f"report: {plain(written.path)}")
    return 0


def add_compare(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "compare",
        help="two recipe runs side by side (accuracy, latency, size, CO2e)",
        description="Print two stored runs side by side and write the comparison as HTML and markdown.",
    )
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument(
        "--out", metavar="DIR", help="folder for compare-A-B.html/.md (default ./lowcarb-runs)"
    )
    common.add_store_flag(p)
    p.set_defaults(handler=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from lowcarb import files
    from lowcarb.report.escape import plain
    from lowcarb.report.terminal import table_from_rows
    from lowcarb.report.write import write_comparison

    folder = files.check_writable_folder(args.out or "lowcarb-runs", "--out")  # before any work
    store = common.open_store_for_runs(args, [args.run_a, args.run_b])
    done = write_comparison(store, args.run_a, args.run_b, folder)
    title = f"compare {done.run_a['id']} vs {done.run_b['id']}"
    common.make_console().print(table_from_rows(title, done.headers, done.rows))
    print(f"comparison: {plain(done.html_path)} and {plain(done.md_path)}")
    return 0
