"""The `lowcarb` command line: the only place that parses command-line strings.

Each verb has an `add_<verb>(subparsers)` that declares its arguments and a `_cmd_<verb>(args)`
that turns them into typed configs and calls the library. Errors the user can fix are raised as
`UserError` (or ValueError from config validation) and printed as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
    """An error the user can fix; printed as one line with exit status 2."""


Handler = Callable[[argparse.Namespace], int]

# ---------------------------------------------------------------------------------------------
# ledger verbs: measure, runs, show, export, regions   (foundation)
# ---------------------------------------------------------------------------------------------


def _fmt_j(energy_j: float) -> str:
    for scale, unit in ((1e6, "MJ"), (1e3, "kJ")):
        if abs(energy_j) >= scale:
            return f"{energy_j / scale:.4g} {unit}"
    return f"{energy_j:.4g} J"


def _fmt_g(co2_g: float | None) -> str:
    if co2_g is None:
        return "-"
    if abs(co2_g) >= 1e3:
        return f"{co2_g / 1e3:.4g} kg"
    return f"{co2_g:.4g} g"


def _add_store_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        metavar="PATH",
        help="run store file (default: $LOWCARB_HOME/runs.db, else ~/.lowcarb/runs.db)",
    )


def _open_store(args: argparse.Namespace):  # -> RunStore
    from lowcarb.store import RunStore

    return RunStore(args.store) if args.store else RunStore.default()


def _footprint_table(fp: dict, title: str):  # -> rich.table.Table
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("component")
    table.add_column("energy", justify="right")
    table.add_column("method")
    for comp, c in fp["components"].items():
        table.add_row(comp, _fmt_j(c["energy_j"]), c["method"])
    table.add_row("total", _fmt_j(fp["energy_j"]), "", end_section=True)
    table.add_row(
        "operational",
        _fmt_g(fp["operational_g"]),
        f"x {fp['intensity_g_per_kwh']:g} gCO2e/kWh x PUE {fp['pue']:g}",
    )
    table.add_row("embodied", _fmt_g(fp["embodied_g"]), "SCI: " + fp.get("embodied_detail", ""))
    table.add_row("total CO2e", _fmt_g(fp["total_g"]), "")
    if fp.get("units"):
        table.add_row(
            f"per {fp.get('unit') or 'unit'}",
            _fmt_g(fp["g_per_unit"]),
            f"{fp['units']:g} {fp.get('unit') or 'units'}, {_fmt_j(fp['j_per_unit'])} each",
        )
    return table


def _console():  # -> rich.console.Console
    import shutil

    from rich.console import Console

    # Pipes get rich's 80 columns by default, too narrow for the run tables.
    return Console(highlight=False, width=max(120, shutil.get_terminal_size().columns))


def add_measure(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--region", help="country (FR, FRA, France) or cloud region (gcp:europe-west1)")
    p.add_argument("--intensity", type=float, metavar="G_PER_KWH", help="grid intensity, gCO2e/kWh")
    p.add_argument("--pue", type=float, help="power usage effectiveness, >= 1.0 (default 1.58)")
    p.add_argument("--embodied-kg", type=float, help="hardware manufacturing footprint, kgCO2e")
    p.add_argument("--lifetime-years", type=float, help="hardware lifetime, years")
    p.add_argument("--resource-share", type=float, help="share of the machine reserved, (0, 1]")
    p.add_argument("--hardware-profile", help="server, desktop, laptop or workstation")
    p.add_argument("--cpu-power-w", type=float, help="processor power at full load, W")
    p.add_argument("--sample-interval", type=float, metavar="S", help="sampling period, s")
    p.add_argument("--unit", help="functional unit name (sample, inference, token, ...)")
    p.add_argument("--units", type=float, help="how many units the command processes")
    p.add_argument("--name", help="run name (default: the command's name)")
    p.add_argument("--json", action="store_true", help="print the footprint as JSON (last line)")
    _add_store_flag(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(handler=_cmd_measure)


def _cmd_measure(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import shlex

    from lowcarb.measure import load_carbon_config
    from lowcarb.measure.command import check_command, measure_command

    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if args.units is not None and args.units <= 0:
        raise UserError(f"--units must be > 0, got {args.units:g}")
    if args.units is not None and not args.unit:
        raise UserError("--units needs --unit NAME (for example --unit sample --units 60000)")
    config = load_carbon_config(
        region=args.region,
        intensity_g_per_kwh=args.intensity,
        pue=args.pue,
        embodied_kg=args.embodied_kg,
        lifetime_years=args.lifetime_years,
        resource_share=args.resource_share,
        hardware_profile=args.hardware_profile,
        cpu_power_w=args.cpu_power_w,
        sample_interval_s=args.sample_interval,
    )
    check_command(argv)
    store = _open_store(args)
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
        console = _console()
        console.print(_footprint_table(d, f"lowcarb: {name} ({d['duration_s']:.1f} s), run {run_id}"))
        console.print(f"intensity: {d['intensity_source']}")
        console.print(f"saved as run {run_id} in {store.path} (lowcarb show {run_id})")
    return exit_code


def add_runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs", help="list stored runs", description="List the runs in the run store, newest first."
    )
    p.add_argument("--limit", type=int, default=50, help="how many runs (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_store_flag(p)
    p.set_defaults(handler=_cmd_runs)


def _cmd_runs(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    if args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    store = _open_store(args)
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
            _fmt_j(t["energy_j"]),
            _fmt_g(t["total_g"]),
        )
    _console().print(table)
    return 0


def add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show",
        help="show one run",
        description="Show a run: its settings, every ledger window and its stage results.",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="a run id or a unique prefix of one")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_store_flag(p)
    p.set_defaults(handler=_cmd_show)


def _cmd_show(args: argparse.Namespace) -> int:
    store = _open_store(args)
    run_id = store.resolve_id(args.run_id)
    if args.json:
        print(store.export_json([run_id]), end="")
        return 0
    run = store.get_run(run_id)
    totals = store.run_totals(run_id)
    console = _console()
    gone = " (its process is gone: killed before it finished)" if store.writer_gone(run_id) else ""
    console.print(f"run {run.run_id}: {run.kind} {run.name!r}, {run.status}{gone}")
    console.print(f"started {run.started_at}, ended {run.ended_at or '-'}")
    if run.command:
        console.print(f"command: {run.command} (exit code {run.exit_code})")
    if run.artifacts_dir:
        console.print(f"artifacts: {run.artifacts_dir}")
    console.print(
        f"total: {_fmt_j(totals['energy_j'])}, {_fmt_g(totals['total_g'])} CO2e "
        f"(operational {_fmt_g(totals['operational_g'])}, embodied {_fmt_g(totals['embodied_g'])})"
    )
    for fp in store.footprints(run_id):
        parent = f", inside {fp['parent']}" if fp.get("parent") else ""
        title = f"window {fp['name']!r} {fp['id']}{parent} ({fp['duration_s']:.1f} s)"
        console.print(_footprint_table(fp, title))
    for stage in store.stage_results(run_id):
        console.print(f"stage {stage['index']} {stage['stage']}: {stage['metrics']}")
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
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
    _add_store_flag(p)
    p.set_defaults(handler=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    store = _open_store(args)
    ids = args.run_ids or None
    text = store.export_csv(ids) if args.format == "csv" else store.export_json(ids)
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise UserError(f"--out {out} is a folder; give a file name")
        try:
            out.write_text(text)
        except OSError as exc:
            raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def add_regions(sub: argparse._SubParsersAction) -> None:
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
    _console().print(table)
    return 0


LEDGER_VERBS = [add_measure, add_runs, add_show, add_export, add_regions]


# ---------------------------------------------------------------------------------------------
# pipeline verbs: run, report, compare   (pipeline)
# ---------------------------------------------------------------------------------------------


def _pipeline_store(args: argparse.Namespace):  # -> RunStore
    from lowcarb.store.runstore import RunStore

    path = getattr(args, "store", None)
    return RunStore(path) if path else RunStore.default()


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a recipe (default: train and evaluate the baseline CNN on digits) and report",
        description=(
            "Run a recipe: load the data and model, run every stage inside the carbon ledger, "
            "evaluate each model it produces, save the run and write report.html / report.md."
        ),
    )
    p.add_argument("recipe", nargs="?", help="recipe YAML file (default: the packaged digits recipe)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a recipe field, e.g. --set train.epochs=2 --set data.train=my.csv "
        "(stage settings: --set stages.lowrank.param_ratio=0.5); repeatable",
    )
    p.add_argument(
        "--out", metavar="DIR", help="parent folder of the run's artifacts (default ./lowcarb-runs)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage lines (CI)")
    _add_store_flag(p)
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lowcarb.pipeline import load_recipe, run_recipe
    from lowcarb.report.summary import fmt_g, fmt_j
    from lowcarb.report.terminal import final_table, payback_lines

    recipe = load_recipe(args.recipe, args.overrides)
    console = Console(stderr=False)

    def on_stage(record) -> None:  # one line per finished ledger window
        fp = record.footprint or {}
        console.print(
            f"[green]done[/green] {record.label:<22} {fp.get('duration_s', 0.0):7.1f} s  "
            f"{fmt_j(fp.get('energy_j')):>9}  {fmt_g(fp.get('total_g')):>9} CO2e"
        )

    result = run_recipe(
        recipe,
        out_dir=args.out,
        quiet=args.quiet,
        store=_pipeline_store(args),
        on_stage=None if args.quiet else on_stage,
        command=" ".join(["lowcarb", *sys.argv[1:]]),
    )
    console.print(final_table(result.run))
    for line in payback_lines(result.run):
        console.print(f"payback: {line}")
    report = result.reports.get("html") or result.reports.get("md")
    if report is not None:
        console.print(f"report: {report}")
    if result.status == "interrupted":
        print(f"lowcarb run: interrupted; run {result.run_id} keeps its finished stages", file=sys.stderr)
        return 130
    if result.status != "completed":
        print(
            f"lowcarb run: error: {result.error} (run {result.run_id} marked {result.status}; "
            f"details in {result.artifacts_dir / 'error.txt'})",
            file=sys.stderr,
        )
        return 1
    return 0


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write the report of a stored run (HTML or markdown)",
        description="Render a stored recipe run as one self-contained HTML file or markdown.",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix (see `lowcarb runs`)")
    p.add_argument("--format", choices=("html", "md"), default="html", help="default: html")
    p.add_argument("--out", metavar="FILE", help="where to write it (default: the run's folder)")
    _add_store_flag(p)
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lowcarb.report import render_html, render_markdown
    from lowcarb.report.stored import load_run

    run = load_run(_pipeline_store(args), args.run_id)
    text = render_html(run) if args.format == "html" else render_markdown(run)
    if args.out:
        path = Path(args.out)
    else:
        folder = Path(run["artifacts_dir"] or Path.cwd())
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"report.{args.format}"
    path.write_text(text, encoding="utf-8")
    if args.format == "md":
        print(text)
    print(f"report: {path}")
    return 0


def add_compare(sub: argparse._SubParsersAction) -> None:
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
    _add_store_flag(p)
    p.set_defaults(handler=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from lowcarb.report import compare_rows, md_table, render_compare_html
    from lowcarb.report.stored import load_run
    from lowcarb.report.terminal import table_from_rows

    store = _pipeline_store(args)
    a, b = load_run(store, args.run_a), load_run(store, args.run_b)
    headers, body = compare_rows(a, b)
    Console().print(table_from_rows(f"compare {a['id']} vs {b['id']}", headers, body))
    folder = Path(args.out or "lowcarb-runs")
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"compare-{a['id']}-{b['id']}"
    html_path, md_path = stem.with_suffix(".html"), stem.with_suffix(".md")
    html_path.write_text(render_compare_html(a, b, (headers, body)), encoding="utf-8")
    md_path.write_text(
        f"# lowcarb compare: {a['id']} vs {b['id']}\n\n" + md_table(headers, body) + "\n",
        encoding="utf-8",
    )
    print(f"comparison: {html_path} and {md_path}")
    return 0


# ---------------------------------------------------------------------------------------------
# technique verbs   (compress, search, ...)
# ---------------------------------------------------------------------------------------------


# --- muP: `mup coord-check MODEL` and `mutransfer RECIPE`   (search.mup) ---


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"expected comma-separated integers like 32,64,128, got {text!r}") from None


def add_mup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mup", help="muP tools: the coordinate check")
    verbs = p.add_subparsers(dest="mup_verb", metavar="MUP_VERB", required=True)
    c = verbs.add_parser(
        "coord-check",
        help="train a few steps at several widths; pass if activations stay flat in width (muP)",
        description=(
            "Train MODEL (mlp, lm or encoder; synthetic data) a few steps at each width under muP "
            "and the standard parametrization, record every layer's mean |activation| per step, "
            "plot both side by side, and pass when every muP log-log slope against width is "
            "within the tolerance. Exit status 0 pass, 1 fail."
        ),
    )
    c.add_argument("model", choices=["mlp", "lm", "encoder"])
    c.add_argument("--widths", default="32,64,128,256",
                   help="comma-separated, increasing (default 32,64,128,256)")
    c.add_argument("--base-width", type=int, help="default: the smallest width")
    c.add_argument("--steps", type=int, default=4, help="training steps per width (default 4)")
    c.add_argument("--lr", type=float, default=1e-2, help="base learning rate (default 0.01)")
    c.add_argument("--optimizer", choices=["adamw", "adam", "sgd"], default="adamw")
    c.add_argument("--seeds", default="0,1", help="averaged (default 0,1)")
    c.add_argument("--tolerance", type=float, default=0.4, help="largest |slope| (default 0.4)")
    c.add_argument("--out", default="coord-check", metavar="DIR",
                   help="folder for coord_check.png and coord_check.json (default ./coord-check)")
    c.set_defaults(handler=_cmd_mup_coord_check)


def _cmd_mup_coord_check(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lowcarb.search.mup import MupModelConfig
    from lowcarb.search.mup.coord_check import CoordCheckConfig, coord_check, plot

    widths, seeds = _int_list(args.widths), _int_list(args.seeds)
    base = args.base_width or widths[0]
    check = CoordCheckConfig(widths=widths, steps=args.steps, lr=args.lr,
                             optimizer=args.optimizer, seeds=seeds, tolerance=args.tolerance)
    result = coord_check(MupModelConfig(kind=args.model, width=base, base_width=base), check)
    out = Path(args.out)
    png = plot(result, out / "coord_check.png")
    (out / "coord_check.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    for p in ("mup", "sp"):
        layer, step, slope = result.worst(p)
        verdict = "pass" if result.passes(p) else "fail"
        print(f"{'muP' if p == 'mup' else 'SP ':<3}  {verdict}  worst slope {slope:+.2f} "
              f"({layer}, step {step}), tolerance {check.tolerance:g}")
    print(f"plot: {png}")
    return 0 if result.passed else 1


def add_mutransfer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mutransfer",
        help="tune a narrow proxy, train the wide model with its values, verify, account",
        description=(
            "Sweep the learning rate (and output multiplier, init scale) of a character-level LM "
            "at the proxy width, train the target width with the best values, verify a few "
            "learning rates around them, and compare the proxy sweep's energy with a direct "
            "sweep at the target width (measured with direct_sweep: true, else extrapolated). "
            "RECIPE is a YAML file: text (a .txt, or .tsv/.csv with `column`), optional "
            "val_text, limit, model {base_width, depth, n_heads, ...}, proxy_width, "
            "target_width, log2_lrs, output_mults, init_stds, train {steps, batch_size, "
            "seq_len, ...}, seeds, verify_octaves, direct_sweep."
        ),
    )
    p.add_argument("recipe", help="mutransfer recipe YAML")
    p.add_argument("--out", default="mutransfer.json", metavar="FILE",
                   help="result JSON (default ./mutransfer.json)")
    p.set_defaults(handler=_cmd_mutransfer)


def _cmd_mutransfer(args: argparse.Namespace) -> int:
    import json
    import random
    from pathlib import Path

    import yaml

    from lowcarb.search.mup.charlm import build_corpus, read_texts
    from lowcarb.search.mup.mutransfer import MutransferConfig, mutransfer

    path = Path(args.recipe)
    if not path.exists():
        raise UserError(f"no recipe at {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or "text" not in raw:
        raise UserError(f"{path}: a mutransfer recipe needs 'text' (the training text file)")
    data_keys = ("text", "val_text", "column", "limit")
    data = {k: raw.pop(k) for k in data_keys if k in raw}
    column, limit = data.get("column", "text"), data.get("limit")
    train_texts = read_texts(path.parent / data["text"], column, limit)
    if "val_text" in data:
        val_texts = read_texts(path.parent / data["val_text"], column)
    else:  # hold out a fixed tenth of the lines
        random.Random(0).shuffle(train_texts)
        cut = max(1, len(train_texts) // 10)
        val_texts, train_texts = train_texts[:cut], train_texts[cut:]
    config = MutransferConfig.from_dict(raw)
    corpus = build_corpus(train_texts, val_texts)

    def progress(t) -> None:
        loss = "diverged" if t.val_loss is None else f"{t.val_loss:.4f}"
        cost = f"reused from {t.reused_from}" if t.reused_from else f"{t.energy_j:.1f} J"
        print(f"{t.stage:<8} width {t.width:<5} lr 2^{t.hp.log2_lr:g}  val loss {loss}  {cost}")

    result = mutransfer(corpus, config, progress=progress)
    out = Path(args.out)
    out.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    gap = result.loss_gap_pct
    print(f"transferred lr 2^{result.transferred.log2_lr:g}: target val loss "
          f"{result.transfer_loss}, best target {result.best_target.val_loss} "
          f"(lr 2^{result.best_target.hp.log2_lr:g}); loss gap "
          f"{'n/a' if gap is None else f'{gap:.2f} %'}")
    print(f"tuning energy: proxy sweep {result.proxy_energy_j:.1f} J vs direct sweep "
          f"{result.direct_energy_j:.1f} J ({result.direct_energy_basis}); ratio "
          f"{result.tuning_energy_ratio:.3f}")
    print(f"result: {out}")
    return 0


# --- search: `search RECIPE`   (search.hpo) ---


def add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search a recipe's settings for quality against measured CO2e (Optuna)",
        description=(
            "Run the recipe's search: section. Each trial applies sampled values to the recipe "
            "(paths as for --set), runs it inside the carbon ledger and scores the final model "
            "(e.g. dev_accuracy against per1k_total_g, CO2e per 1,000 inferences). Poor trials "
            "stop early (median pruning on dev quality). The study lives in the run folder "
            "(SQLite) unless --storage names a shared database: start `lowcarb search` with the "
            "same --storage and --study on several machines to share one study."
        ),
    )
    p.add_argument("recipe", help="recipe YAML file with a search: section")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a recipe field, e.g. --set search.n_trials=10; repeatable",
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="shared study storage, e.g. postgresql://user:pass@host:5432/db "
        "(default: search.db in the run folder)",
    )
    p.add_argument("--study", metavar="NAME", help="study name to create or join (default: recipe name)")
    p.add_argument("--n-trials", type=int, metavar="N", help="finished trials the study needs")
    p.add_argument("--out", metavar="DIR", help="parent folder of the run's artifacts (default ./lowcarb-runs)")
    p.add_argument("--quiet", action="store_true", help="no per-trial lines")
    p.set_defaults(handler=_cmd_search)


def _cmd_search(args: argparse.Namespace) -> int:
    from lowcarb.pipeline import load_recipe
    from lowcarb.pipeline.search_run import search_recipe
    from lowcarb.report.search import search_lines

    if args.n_trials is not None and args.n_trials < 1:
        raise UserError(f"--n-trials must be >= 1, got {args.n_trials}")
    recipe = load_recipe(args.recipe, args.overrides)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours

    def on_trial(number: int, status: str, params) -> None:
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        print(f"trial {number:>3} {status:<9} {shown}", flush=True)

    done = search_recipe(
        recipe,
        storage=args.storage,
        study=args.study,
        n_trials=args.n_trials,
        out_dir=args.out,
        store=_pipeline_store(args),
        command=" ".join(["lowcarb", *sys.argv[1:]]),
        on_trial=None if args.quiet else on_trial,
    )
    for line in search_lines(done.result):
        print(line)
    print(f"run: {done.run_id}  report: {done.artifacts_dir / 'search.html'}")
    return 0


# Each entry: (add_parser function). Append yours here.
# --- compress: `export-onnx MODEL OUT.onnx`   (compress.export_onnx) ---


def add_export_onnx(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-onnx",
        help="export a saved model to ONNX (optionally onnxruntime int8) and time it in onnxruntime",
        description=(
            "Export a model folder (a run's model/, or a Hugging Face folder) to ONNX with dynamic "
            "batch and sequence axes, check onnxruntime agrees with PyTorch, and measure its "
            "latency through onnxruntime. Needs the onnx extra: pip install 'lowcarb[onnx]'."
        ),
    )
    p.add_argument("model", help="model folder (saved by lowcarb, or a Hugging Face folder)")
    p.add_argument("out", help="output file, ending in .onnx")
    p.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx (onnxruntime dynamic int8) and time that")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the example and the timing (default 32)")
    p.add_argument("--seq-len", type=int, default=64, help="text models: tokens per example (default 64)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the timing (default 1)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.set_defaults(handler=_cmd_export_onnx)


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    import torch

    from lowcarb.compress.export_onnx import OnnxExportConfig, export, onnx_latency
    from lowcarb.compress.saved import is_compressed, load_compressed
    from lowcarb.models import load_model

    if args.batch_size < 1 or args.seq_len < 1:
        raise UserError("--batch-size and --seq-len must be >= 1")
    handle = load_compressed(args.model) if is_compressed(args.model) else load_model(args.model)
    if handle.kind == "text":
        if handle.tokenizer is None:
            raise UserError(f"{args.model}: a text model without a tokenizer cannot be exported")
        # A fixed-length example; the exported graph keeps batch and sequence axes free.
        words = " ".join(["token"] * args.seq_len)
        batch = dict(
            handle.tokenizer(
                [words] * args.batch_size,
                padding=True,
                truncation=True,
                max_length=args.seq_len,
                return_tensors="pt",
            )
        )
    else:
        if handle.input_shape is None:
            raise UserError(f"{args.model}: the model description has no input shape")
        batch = {"pixel_values": torch.rand(args.batch_size, *handle.input_shape)}
    try:
        summary = export(
            handle.model, batch, args.out, OnnxExportConfig(opset=args.opset, int8=args.int8)
        )
        latency = onnx_latency(summary.path, batch, threads=args.threads)
    except ImportError as exc:  # the optional onnx extra is missing: say what to install
        raise UserError(str(exc)) from None
    print(
        f"exported {summary.path} ({summary.size_bytes / 1e6:.2f} MB"
        + (f", fp32 {summary.fp32_size_bytes / 1e6:.2f} MB" if summary.int8 else "")
        + f"); max |onnxruntime - torch| = {summary.max_abs_diff:.2e}"
        + (
            f" (int8 file: {summary.int8_max_abs_diff:.2e}, quantization error)"
            if summary.int8_max_abs_diff is not None
            else ""
        )
    )
    print(
        f"onnxruntime latency at batch {args.batch_size}, {args.threads} thread(s): "
        f"p50 {latency['p50_ms']:.2f} ms, p95 {latency['p95_ms']:.2f} ms"
    )
    return 0


# --- search: `parsec [RECIPE] --space cnn|text`   (search.parsec) ---


def add_parsec(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "parsec",
        help="probabilistic architecture search (PARSEC, or training-free Weightless PARSEC)",
        description=(
            "Learn a distribution over the architectures of a space (cnn: a cell of conv3x3, "
            "conv5x5, separable conv, max/avg pool, identity and zero edges; text: embedding "
            "width, depth, conv/attention mixers, pooling) on the recipe's data (default: the "
            "embedded digits), holding one architecture in memory at a time; retrain the most "
            "probable architectures from scratch and report them. --method weightless scores "
            "architectures at initialisation instead of training shared weights. Writes "
            "result.json and prior.json (pass it to --warm-start to start a larger search)."
        ),
    )
    p.add_argument("recipe", nargs="?", help="recipe YAML whose data: section is used (default: digits)")
    p.add_argument("--space", choices=["cnn", "text"], default="cnn", help="search space (default cnn)")
    p.add_argument("--method", choices=["parsec", "weightless"], default="parsec")
    p.add_argument("--score", choices=["naswot", "synflow", "gradnorm"], default="naswot",
                   help="weightless: the training-free score (default naswot)")
    p.add_argument("--iterations", type=int, help="search iterations (default 60 parsec, 20 weightless)")
    p.add_argument("--samples", type=int, help="architectures per iteration (default 4 parsec, 8 weightless)")
    p.add_argument("--top", type=int, default=3, help="architectures retrained at the end (default 3)")
    p.add_argument("--epochs", type=int, default=10, help="retraining epochs (default 10)")
    p.add_argument("--warm-start", metavar="PRIOR.json", help="start from a saved prior")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="parsec-out", metavar="DIR", help="folder for result.json and prior.json")
    _add_store_flag(p)
    p.set_defaults(handler=_cmd_parsec)


def _cmd_parsec(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lowcarb.data import DataConfig, load_data
    from lowcarb.search.parsec import (
        CnnSpaceConfig,
        ParsecConfig,
        TextSpaceConfig,
        WeightlessConfig,
        arch_key,
        cnn_space,
        parsec,
        text_space,
        weightless,
    )
    from lowcarb.store.tracked import store_disabled
    from lowcarb.train import TrainConfig

    for name in ("iterations", "samples", "top", "epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name} must be >= 1, got {value}")
    if args.recipe:
        from lowcarb.pipeline import load_recipe

        data_config = load_recipe(args.recipe, []).data
    else:
        data_config = DataConfig()
    data = load_data(data_config)
    tokenizer = None
    if args.space == "cnn":
        if data.kind != "image":
            raise UserError("--space cnn needs image data (the default digits); use --space text for text data")
        space = cnn_space(CnnSpaceConfig(input_shape=tuple(data.feature_shape), num_labels=data.num_labels))
    else:
        if data.kind != "text":
            raise UserError("--space text needs text data: give a recipe whose data: names a .tsv/.csv/.jsonl")
        from lowcarb.models.byte_tokenizer import VOCAB_SIZE, ByteTokenizer

        tokenizer = ByteTokenizer()
        space = text_space(TextSpaceConfig(vocab_size=VOCAB_SIZE, num_labels=data.num_labels,
                                           max_length=data_config.max_length))
    retrain = TrainConfig(epochs=args.epochs, batch_size=64, lr=3e-3, seed=args.seed, quiet=True)
    common = {"top": args.top, "retrain": retrain, "seed": args.seed, "warm_start": args.warm_start}
    if args.iterations is not None:
        common["iterations"] = args.iterations
    if args.samples is not None:
        common["samples"] = args.samples
    if args.method == "parsec":
        # The warm-up (pi frozen while shared weights train) stays a fifth of the search at most.
        warmup = min(ParsecConfig.warmup_iterations, common.get("iterations", ParsecConfig.iterations) // 5)
        config = ParsecConfig(**common, warmup_iterations=warmup)
        result = parsec.search(space, data, config, tokenizer=tokenizer, progress=print)
    else:
        result = weightless.search(space, data, WeightlessConfig(score=args.score, **common),
                                   tokenizer=tokenizer, progress=print)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.prior.save(out / "prior.json")
    summary = result.to_dict()
    (out / "result.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    if not store_disabled():
        store = _pipeline_store(args)
        run_id = store.create_run("search", f"{args.method}:{space.name}", command=" ".join(["lowcarb", *sys.argv[1:]]),
                                  settings={"space": space.name, "method": args.method}, artifacts_dir=out)
        store.add_footprint(run_id, result.search_footprint)
        store.add_footprint(run_id, result.retrain_footprint)
        best = result.best
        store.finish_run(run_id, "completed", exit_code=0, metrics={
            "dev_accuracy": best.dev_accuracy, "test_accuracy": best.test_accuracy, "params": best.params,
            "search_energy_j": result.search_footprint.energy_j, "retrain_energy_j": result.retrain_footprint.energy_j,
        })
        print(f"run: {run_id}")
    best = result.best
    test = "n/a" if best.test_accuracy is None else f"{best.test_accuracy:.4f}"
    print(f"best: dev {best.dev_accuracy:.4f} test {test}, {best.params} parameters: {arch_key(best.arch)}")
    print(f"search {_fmt_j(result.search_footprint.energy_j)} ({result.evaluated} architectures), "
          f"retraining {_fmt_j(result.retrain_footprint.energy_j)} ({len(result.candidates)} architectures)")
    print(f"result: {out / 'result.json'}  prior: {out / 'prior.json'}")
    return 0


# --- search: `autodistil RECIPE --flops-budget F`   (search.autodistil) ---


def add_autodistil(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "autodistil",
        help="search a student of a BERT teacher under a FLOPs budget (AutoDistil) and fine-tune it",
        description=(
            "Run a recipe whose autodistil stage (appended when the recipe has none) trains one "
            "weight-sharing supernet per sub-space on the teacher's self-attention relations "
            "(unlabelled training text), searches the students under the FLOPs budget by "
            "held-out relation loss, extracts the best as a Hugging Face BERT and fine-tunes it. "
            "The teacher is the model the recipe's earlier stages produce (for example train)."
        ),
    )
    p.add_argument("recipe", help="recipe YAML (a text task and a BERT-style model, e.g. minilm)")
    p.add_argument("--flops-budget", type=float, required=True, metavar="F",
                   help="forward FLOPs per example at --seq-len tokens; a value in (0, 1] is a "
                   "fraction of the teacher's FLOPs (0.5: half)")
    p.add_argument("--seq-len", type=int, help="tokens per example for FLOPs (default: data.max_length)")
    p.add_argument("--steps", type=int, help="supernet training steps per sub-space (default 300)")
    p.add_argument("--subspaces", type=int, help="number of sub-spaces (default 3: tiny, small, base)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a recipe field (as in `lowcarb run`); repeatable")
    p.add_argument("--out", metavar="DIR", help="parent folder of the run's artifacts (default ./lowcarb-runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage lines")
    _add_store_flag(p)
    p.set_defaults(handler=_cmd_autodistil)


def _cmd_autodistil(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml
    from rich.console import Console

    from lowcarb.pipeline import load_recipe, recipe_from_dict, run_recipe
    from lowcarb.report.terminal import final_table

    if not args.flops_budget > 0:
        raise UserError(f"--flops-budget must be > 0, got {args.flops_budget:g}")
    for name in ("seq_len", "steps", "subspaces"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    load_recipe(args.recipe, [])  # the usual one-line errors for a missing or broken file
    raw = yaml.safe_load(Path(args.recipe).read_text(encoding="utf-8")) or {}
    stages = list(raw.get("stages") or ["train", "evaluate"])
    names = [next(iter(s)) if isinstance(s, dict) else s for s in stages]
    if "autodistil" not in names:
        stages.append("autodistil")
    raw["stages"] = stages
    settings = {"flops_budget": args.flops_budget, "seq_len": args.seq_len,
                "steps_per_subspace": args.steps, "subspaces": args.subspaces}
    overrides = [*args.overrides] + [
        f"stages.autodistil.{key}={value}" for key, value in settings.items() if value is not None
    ]
    recipe = recipe_from_dict(raw, source=args.recipe, overrides=overrides)
    console = Console(stderr=False)
    result = run_recipe(recipe, out_dir=args.out, quiet=args.quiet, store=_pipeline_store(args),
                        command=" ".join(["lowcarb", *sys.argv[1:]]))
    if result.status != "completed":
        print(f"lowcarb autodistil: error: {result.error} (run {result.run_id} marked "
              f"{result.status}; details in {result.artifacts_dir / 'error.txt'})", file=sys.stderr)
        return 130 if result.status == "interrupted" else 1
    console.print(final_table(result.run))
    record = next(s for s in result.run["stages"] if s["name"] == "autodistil" and not s.get("auto"))
    notes = record["summary"]
    console.print(
        f"chosen student {notes['student']}: {notes['student_flops'] / 1e6:.1f} MFLOPs per example "
        f"(budget {notes['budget_flops'] / 1e6:.1f}, teacher {notes['teacher_flops'] / 1e6:.1f}), "
        f"{len(notes['candidates'])} students searched"
    )
    console.print(f"searched students: {result.artifacts_dir / 'autodistil' / 'candidates.md'}")
    report = result.reports.get("html") or result.reports.get("md")
    if report is not None:
        console.print(f"report: {report}")
    return 0


VERBS: list[Callable[[argparse._SubParsersAction], None]] = [*LEDGER_VERBS]
VERBS += [add_run, add_report, add_compare]
VERBS += [add_mup, add_mutransfer]
VERBS += [add_search]
VERBS += [add_export_onnx]
VERBS += [add_parsec]
VERBS += [add_autodistil]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lowcarb",
        description=(
            "Make AI models cheaper to build and to run, and prove it in joules and grams of CO2e."
        ),
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for add in VERBS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except (UserError, ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"lowcarb {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lowcarb {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
