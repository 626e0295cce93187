"""Ledger verbs: measure a command, list, show and export stored runs, list grid regions."""

from __future__ import annotations

import argparse
import sys

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
    p.add_argument("--units", type=float, help="how many units the command processes")
    p.add_argument("--name", help="run name (default: the command's name)")
    p.add_argument("--json", action="store_true", help="print the footprint as JSON (last line)")
    common.add_store_flag(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(handler=_cmd_measure)


def _cmd_measure(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import shlex

    from lowcarb.measure.command import check_command, measure_command

    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if args.units is not None and args.units <= 0:
        raise ConfigError(f"--units must be > 0, got {args.units:g}")
    if args.units is not None and not args.unit:
        raise ConfigError("--units needs --unit NAME (for example --unit sample --units 60000)")
    config = common.carbon_config(args)
    check_command(argv)
    store = common.open_store(args)
    name = args.name or argv[0].rsplit("/", 1)[-1]
    run_id = store.create_run(
        "measure",
        name,
        command=shlex.join(argv),
        settings={"config": dataclasses.asdict(config), "unit": args.unit, "units": args.units},
    )
    try:
        exit_code, fp = measure_command(
            argv,
            name=name,
            unit=args.unit,
            units=args.units,
            config=config,
            on_close=lambda fp: store.add_footprint(run_id, fp),
        )
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted", exit_code=130)
        raise
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    d = fp.to_dict()
    store.finish_run(
        run_id,
        "completed" if exit_code == 0 else "failed",
        exit_code=exit_code,
        metrics={k: d[k] for k in ("duration_s", "energy_j", "operational_g", "embodied_g", "total_g")},
    )
    if args.json:
        print(json.dumps({"run_id": run_id, "exit_code": exit_code, "footprint": d}))
    else:
        console = common.make_console()
        console.print(common.footprint_table(d, f"lowcarb: {name} ({d['duration_s']:.1f} s), run {run_id}"))
        console.print(f"intensity: {d['intensity_source']}")
        console.print(f"saved as run {run_id} in {store.path} (lowcarb show {run_id})")
    return exit_code


def add_runs(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "runs", help="list stored runs", description="List the runs in the run store, newest first."
    )
    p.add_argument("--limit", type=int, default=50, help="how many runs (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON")
    common.add_store_flag(p)
    p.set_defaults(handler=_cmd_runs)


def _cmd_runs(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    if args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    store = common.open_store(args)
    runs = store.list_runs(limit=args.limit)
    rows = [(r, store.run_totals(r.run_id)) for r in runs]
    if args.json:
        print(json.dumps([{**r.to_dict(), "totals": t} for r, t in rows], indent=2, default=str))
        return 0
    if not rows:
        print(f"no runs in {store.path}")
        return 0
    table = Table(title=f"runs in {store.path}", title_justify="left")
    for col in ("run", "kind", "name", "status", "started (UTC)", "duration", "energy", "CO2e"):
        table.add_column(col, justify="right" if col in ("duration", "energy", "CO2e") else "left")
    for r, t in rows:
        table.add_row(
            r.run_id,
            r.kind,
            r.name,
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
    store = common.open_store(args)
    run_id = store.resolve_id(args.run_id)
    if args.json:
        print(store.export_json([run_id]), end="")
        return 0
    run = store.get_run(run_id)
    totals = store.run_totals(run_id)
    console = common.make_console()
    gone = " (its process is gone: killed before it finished)" if store.writer_gone(run_id) else ""
    console.print(f"run {run.run_id}: {run.kind} {run.name!r}, {run.status}{gone}")
    console.print(f"started {run.started_at}, ended {run.ended_at or '-'}")
    if run.command:
        console.print(f"command: {run.command} (exit code {run.exit_code})")
    if run.artifacts_dir:
        console.print(f"artifacts: {run.artifacts_dir}")
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
    for fp in store.footprints(run_id):
        parent = f", inside {fp['parent']}" if fp.get("parent") else ""
        title = f"window {fp['name']!r} {fp['id']}{parent} ({fp['duration_s']:.1f} s)"
        console.print(common.footprint_table(fp, title))
    for stage in store.stage_results(run_id):
        console.print(f"stage {stage['index']} {stage['stage']}: {stage['metrics']}")
    return 0


def add_export(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "export",
        help="export runs as JSON or CodeCarbon-style CSV",
        description=(
            "Export runs (all, or the RUN_IDs given). csv has CodeCarbon's emissions.csv columns "
            "(one row per ledger window) followed by lowcarb's own."
        ),
    )
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="runs to export (default: all)")
    p.add_argument("--format", choices=("json", "csv"), default="json", help="default json")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    common.add_store_flag(p)
    p.set_defaults(handler=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    store = common.open_store(args)
    ids = args.run_ids or None
    text = store.export_csv(ids) if args.format == "csv" else store.export_json(ids)
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise PathError(f"--out {out} is a folder; give a file name")
        try:
            out.write_text(text)
        except OSError as exc:
            raise PathError(f"cannot write {out}: {exc.strerror or exc}") from None
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
