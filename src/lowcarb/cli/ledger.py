"""Ledger verbs: measure a command, list, show and export stored runs, list grid regions."""

from __future__ import annotations

import argparse
import sys

from lowcarb import files
from lowcarb.cli import common
from lowcarb.errors import ConfigError, PathError


def add_measure(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "measure",
        help="run a command and measure its energy and CO2e",
        description=(
            "Run CMD, measure its process tree (RAPL/NVML counters where readable, else the "
            "CPU-time estimate), print energy per component and CO2e, save the run, and exit "
            "with CMD's exit code. Settings: flags > environment > lowcarb.toml > defaults."
        ),
        usage="lowcarb measure [options] -- CMD [ARGS...]",
    )
    common.add_carbon_flags(p)
    p.add_argument("--unit", help="functional unit name (sample, inference, token, ...)")
    p.add_argument("--units", type=common.finite_float, help="how many units the command processes")
    p.add_argument("--name", help="run name (default: the command's name)")
    p.add_argument("--json", action="store_true", help="print the footprint as JSON (last line)")
    common.add_store_flag(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(handler=_cmd_measure)


def _cmd_measure(args: argparse.Namespace) -> int:
    import json

    from lowcarb.measure.command import check_command
    from lowcarb.store.measured import MeasuredCommand, measure_and_save

    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if args.units is not None and args.units <= 0:
        raise ConfigError(f"--units must be > 0, got {args.units:g}")
    if args.units is not None and not args.unit:
        raise ConfigError("--units needs --unit NAME (for example --unit sample --units 60000)")
    config = common.carbon_config(args)
    check_command(argv)  # before the store is opened
    store = common.open_store(args)
    console = common.make_console()

    def show(done: MeasuredCommand) -> None:
        # The figures first: if the store cannot take them (full disk), they are still shown.
        d = done.footprint.to_dict()
        if args.json:
            print(json.dumps({"run_id": done.run_id, "exit_code": done.exit_code, "footprint": d}))
            return
        title = f"lowcarb: {done.name} ({d['duration_s']:.1f} s), run {done.run_id}"
        console.print(common.footprint_table(d, title))
        console.print(f"intensity: {d['intensity_source']}")

    done = measure_and_save(
        store, argv, config=config, name=args.name, unit=args.unit, units=args.units, on_measured=show
    )
    if not args.json:
        console.print(f"saved as run {done.run_id} in {store.location} (lowcarb show {done.run_id})")
    return done.exit_code


def add_runs(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "runs",
        help="list stored runs, or delete some",
        description=(
            "List the runs in the run store, newest first. --delete RUN_ID removes runs (their "
            "windows and stage results; artifacts folders on disk are left alone)."
        ),
    )
    p.add_argument("--limit", type=int, default=50, help="how many runs (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--delete", nargs="+", metavar="RUN_ID", help="delete these runs (ids or unique prefixes)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --delete: also delete runs still marked running (a live writer then fails)",
    )
    common.add_store_flag(p)
    p.set_defaults(handler=_cmd_runs)


def _cmd_runs(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from lowcarb.report.escape import plain as escape
    from lowcarb.store import StoreNotFound

    if args.delete:
        return _delete_runs(args)
    if args.force:
        raise ConfigError("--force goes with --delete RUN_ID")
    if args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    try:
        store = common.open_store(args, read=True)
    except StoreNotFound:
        if args.store:
            raise  # a path the user typed that holds no store: say so
        print("no runs yet (no run store has been written)")
        return 0
    runs = store.list_runs(limit=args.limit)
    rows = [(r, store.run_totals(r.run_id)) for r in runs]
    if args.json:
        print(json.dumps([{**r.to_dict(), "totals": t} for r, t in rows], indent=2, default=str))
        return 0
    if not rows:
        print(f"no runs in {store.location}")
        return 0
    table = Table(title=escape(f"runs in {store.location}"), title_justify="left")
    for col in ("run", "kind", "name", "status", "started (UTC)", "duration", "energy", "CO2e"):
        table.add_column(col, justify="right" if col in ("duration", "energy", "CO2e") else "left")
    for r, t in rows:
        table.add_row(
            r.run_id,
            escape(r.kind),
            escape(r.name),
            r.status
            + (f" ({r.exit_code})" if r.exit_code not in (None, 0) else "")
            + (" (process gone)" if store.writer_gone(r.run_id) else ""),
            r.started_at[:19].replace("T", " "),
            f"{t['duration_s']:.1f} s",
            common.fmt_j(t["energy_j"]),
            common.fmt_g(t["total_g"]),
        )
    common.make_console().print(table)
    return 0


def _delete_runs(args: argparse.Namespace) -> int:
    """Delete runs: all ids are checked first, so a typo deletes nothing."""
    store = common.open_store(args, write_existing=True)
    ids = [store.resolve_id(r) for r in args.delete]
    for run_id in dict.fromkeys(ids):
        done = store.delete_run(run_id, force=args.force)
        left = f"; its artifacts stay in {done['artifacts_dir']}" if done["artifacts_dir"] else ""
        print(
            f"deleted run {run_id} ({done['footprints']} windows, {done['stage_results']} stage "
            f"results) from {store.location}{left}"
        )
    return 0


def add_show(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "show",
        help="show one run",
        description="Show a run: its settings, every ledger window and its stage results.",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="a run id or a unique prefix of one")
    p.add_argument("--json", action="store_true", help="print JSON")
    common.add_store_flag(p)
    p.set_defaults(handler=_cmd_show)


def _cmd_show(args: argparse.Namespace) -> int:
    from lowcarb.report.escape import plain as escape

    store = common.open_store_for_runs(args, [args.run_id])
    run_id = store.resolve_id(args.run_id)
    if args.json:
        print(store.export_json([run_id]), end="")
        return 0
    run = store.get_run(run_id)
    totals = store.run_totals(run_id)
    console = common.make_console()
    gone = " (its process is gone: killed before it finished)" if store.writer_gone(run_id) else ""
    console.print(f"run {run.run_id}: {escape(run.kind)} {escape(repr(run.name))}, {run.status}{gone}")
    console.print(f"started {run.started_at}, ended {run.ended_at or '-'}")
    if run.command:
        console.print(f"command: {escape(run.command)} (exit code {run.exit_code})")
    if run.artifacts_dir:
        console.print(f"artifacts: {escape(run.artifacts_dir)}")
    console.print(
        f"total: {common.fmt_j(totals['energy_j'])}, {common.fmt_g(totals['total_g'])} CO2e "
        f"(operational {common.fmt_g(totals['operational_g'])}, embodied {common.fmt_g(totals['embodied_g'])}"
        + (
            f", of which GPU {common.fmt_g(totals['gpu_embodied_g'])}"
            if totals.get("gpu_embodied_g")
            else ""
        )
        + ")"
    )
    for proc in store.processes(run_id):
        console.print(
            f"job process {proc['host']}:{proc['pid']} {proc['status']}, started {proc['started_at']}",
            markup=False,
        )
    for fp in store.footprints(run_id):
        parent = f", inside {fp['parent']}" if fp.get("parent") else ""
        title = f"window {fp['name']!r} {fp['id']}{parent} ({fp['duration_s']:.1f} s)"
        console.print(common.footprint_table(fp, escape(title)))
        # why each figure is what it is: fallbacks, the RAPL idle split, the share of the host
        for comp, c in fp["components"].items():
            if c.get("detail") and comp != "gpu":  # the table's caption has the GPU's
                console.print(f"  {comp}: {c['detail']}", markup=False)
        console.print(f"  embodied share: {fp.get('embodied_detail', '-')}", markup=False)
    for stage in store.stage_results(run_id):
        console.print(f"stage {stage['index']} {stage['stage']}: {stage['metrics']}")
    return 0


def add_export(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "export",
        help="export runs as JSON or CodeCarbon-style CSV",
        description=(
            "Export runs (all, or the RUN_IDs given). csv has CodeCarbon 3.x's emissions.csv "
            "columns, names, order and units (kWh with the PUE applied, kg, GiB), then lowcarb's "
            "own (embodied and total emissions, methods, window names); one row per top-level "
            "window unless --all-windows."
        ),
    )
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="runs to export (default: all)")
    p.add_argument("--format", choices=("json", "csv"), default="json", help="default json")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    p.add_argument(
        "--all-windows",
        action="store_true",
        help=(
            "csv: one row per window, nested ones included (parent_window_id names the parent); "
            "by default only top-level windows, so every column sums to the run's total"
        ),
    )
    common.add_store_flag(p)
    p.set_defaults(handler=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.all_windows and args.format != "csv":
        raise ConfigError("--all-windows is for --format csv (json always has every window)")
    ids = args.run_ids or None
    store = common.open_store_for_runs(args, ids) if ids else common.open_store(args, read=True)
    if args.format == "csv":
        text = store.export_csv(ids, all_windows=args.all_windows)
    else:
        text = store.export_json(ids)
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise PathError(f"--out {out} is a folder; give a file name")
        files.write_text(out, text)  # a PathError naming the file when it cannot be written
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def add_regions(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "regions",
        help="list grid regions and their carbon intensity",
        description="List the packaged grid intensities (countries and cloud regions).",
    )
    p.add_argument("query", nargs="?", help="filter by code, name or provider:region")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_regions)


def _cmd_regions(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from rich.table import Table

    from lowcarb.measure import lookup_region, search_regions

    found = search_regions(args.query)
    if not found:
        lookup_region(args.query)  # raises the error listing close matches
    if args.json:
        print(json.dumps([dataclasses.asdict(g) for g in found], indent=2))
        return 0
    table = Table(title=f"{len(found)} regions", title_justify="left")
    for col in ("region", "alpha-3", "name", "gCO2e/kWh", "year", "source"):
        table.add_column(col, justify="right" if col == "gCO2e/kWh" else "left")
    for g in found:
        table.add_row(
            g.key, g.iso3, g.name, f"{g.intensity_g_per_kwh:g}", str(g.year or ""), g.source[:80]
        )
    common.make_console().print(table)
    return 0


LEDGER_VERBS = [add_measure, add_runs, add_show, add_export, add_regions]
