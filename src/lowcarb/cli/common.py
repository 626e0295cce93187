"""Argument helpers every verb family shares: store flag, recipe flags, output formatting.

Each helper is written once here so that a flag means the same on every verb that has it.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from lowcarb.errors import ConfigError

if TYPE_CHECKING:  # imported lazily at run time: `lowcarb --help` stays fast
    from rich.console import Console
    from rich.table import Table

    from lowcarb.measure import CarbonConfig
    from lowcarb.store import RunStore

Handler = Callable[[argparse.Namespace], int]
Subparsers = argparse._SubParsersAction  # argparse names its subparsers type privately
AddVerb = Callable[[Subparsers], None]


def fmt_j(energy_j: float) -> str:
    for scale, unit in ((1e6, "MJ"), (1e3, "kJ")):
        if abs(energy_j) >= scale:
            return f"{energy_j / scale:.4g} {unit}"
    return f"{energy_j:.4g} J"


def fmt_g(co2_g: float | None) -> str:
    if co2_g is None:
        return "-"
    if abs(co2_g) >= 1e3:
        return f"{co2_g / 1e3:.4g} kg"
    return f"{co2_g:.4g} g"


def finite_float(text: str) -> float:
    """argparse type for a number option: `inf` and `nan` are refused here, at the edge, so they
    never reach a computation or a JSON file (where they would be written as Infinity/NaN)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit 2), like every other
    error lowcarb prints; the usage is one `--help` away."""

    def error(self, message: str) -> NoReturn:
        from lowcarb.report.escape import plain

        self.exit(2, f"{self.prog}: error: {plain(message)} (see {self.prog} --help)\n")


def add_store_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        metavar="PATH|URL",
        help=(
            "run store: a file (SQLite) or a postgresql://user@host/db URL shared by a team "
            "(default: $LOWCARB_STORE, else [store] url in lowcarb.toml, else "
            "$LOWCARB_HOME/runs.db, else ~/.lowcarb/runs.db)"
        ),
    )


def one_line_warnings() -> None:
    """LowcarbWarnings (a skipped broken row, a full store, rows dropped from a data file) as one
    line each on stderr; other warnings keep Python's format."""
    import warnings

    from lowcarb.errors import LowcarbWarning

    default = warnings.showwarning
    if getattr(default, "lowcarb_one_line", False):
        return  # installed already

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, LowcarbWarning):
            from lowcarb.report.escape import plain

            print(f"lowcarb: warning: {plain(message)}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    show.lowcarb_one_line = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def open_store(
    args: argparse.Namespace, *, read: bool = False, write_existing: bool = False
) -> RunStore:
    """The run store named by --store, else the default one (verbs without --store too).

    `read=True` (verbs that only read) creates nothing: a missing store is a StoreNotFound, and a
    store the user may not write (a shared read-only file) still opens. `write_existing=True`
    (deleting runs) writes, but only into a store that exists.
    """
    from lowcarb.store import RunStore

    create = not (read or write_existing)
    location = getattr(args, "store", None)
    if location:
        # RunStore(location) returns the backend for it (SQLite file or PostgreSQL URL).
        return RunStore(location, create=create, readonly=read)  # type: ignore[abstract]
    return RunStore.default(create=create, readonly=read)


def open_store_for_runs(args: argparse.Namespace, run_ids: list[str]) -> RunStore:
    """The store, read-only, for verbs that read given runs: with no store there, none of the
    runs exists, and the error names the first (creating nothing)."""
    from lowcarb.store import RunNotFound, StoreNotFound

    try:
        return open_store(args, read=True)
    except StoreNotFound as exc:
        raise RunNotFound(f"no run {run_ids[0]!r}: {exc}") from None


def add_overrides_flag(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE", help=help
    )


def add_device_flags(p: argparse.ArgumentParser, *, precision: bool = True) -> None:
    """--device and (unless the verb computes in fp32 by design) --precision: where a verb that
    trains or evaluates computes."""
    p.add_argument(
        "--device",
        metavar="DEVICE",
        help="auto, cpu, cuda or cuda:N (default: the recipe's device:, else $LOWCARB_DEVICE, "
        "else auto: the first GPU when torch sees one, else the CPU)",
    )
    if not precision:
        return
    p.add_argument(
        "--precision",
        metavar="P",
        help="auto, fp32, bf16 or fp16 (autocast; fp16 with loss scaling). Default: the recipe's "
        "precision:, else $LOWCARB_PRECISION, else auto: bf16 on GPUs that have it, else fp32",
    )


def device_overrides(args: argparse.Namespace) -> list[str]:
    """--device / --precision as recipe overrides (the recipe checks the values; they win over
    the recipe's own fields, which win over the environment)."""
    out = []
    for name in ("device", "precision"):
        value = getattr(args, name, None)
        if value is not None:
            out.append(f"{name}={value}")
    return out


def add_recipe_run_flags(p: argparse.ArgumentParser, quiet_help: str) -> None:
    """The flags of every verb that runs a recipe: --device/--precision, --out DIR, --quiet,
    --store (with --set declared before them by the verb, whose example differs)."""
    add_device_flags(p)
    add_run_out_flag(p)
    p.add_argument("--quiet", action="store_true", help=quiet_help)
    add_store_flag(p)


def recipe_overrides(args: argparse.Namespace) -> list[str]:
    """--set values, then --device / --precision (which win over the recipe's fields)."""
    return [*args.overrides, *device_overrides(args)]


def add_run_out_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", metavar="DIR", help="parent folder of the run's artifacts (default ./lowcarb-runs)"
    )


def command_line() -> str:
    """The command as the user typed it, recorded with the run."""
    return " ".join(["lowcarb", *sys.argv[1:]])


def require_at_least_one(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """Integer options that count something (epochs, steps, ...) must be >= 1 when given."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def make_console() -> Console:
    from rich.console import Console

    # Pipes get rich's 80 columns by default, too narrow for the run tables. Markup and emoji
    # codes are off: what is printed holds run names, paths and messages users and files chose,
    # and `[/bold]` or `[link=...]` in a name must print as typed (style with rich Text instead).
    return Console(
        highlight=False,
        markup=False,
        emoji=False,
        width=max(120, shutil.get_terminal_size().columns),
    )


def footprint_table(fp: dict, title: str) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("component")
    table.add_column("energy", justify="right")
    table.add_column("method")
    notes = []
    for comp, c in fp["components"].items():
        incomplete = c.get("incomplete") or ""
        table.add_row(comp, fmt_j(c["energy_j"]), c["method"] + (" (INCOMPLETE)" if incomplete else ""))
        if comp == "gpu":  # how the GPUs were shared out: the share, or why nothing was charged
            notes.append(f"gpu: {c.get('detail', '')}")
        if incomplete:
            notes.append(f"{comp} incomplete: {incomplete}")
    table.add_row("total", fmt_j(fp["energy_j"]), "", end_section=True)
    table.add_row(
        "operational",
        fmt_g(fp["operational_g"]),
        f"x {fp['intensity_g_per_kwh']:g} gCO2e/kWh x PUE {fp['pue']:g}",
    )
    gpu_g = fp.get("gpu_embodied_g") or 0.0
    server_how = "SCI: " + fp.get("embodied_detail", "")
    if gpu_g or "gpu" in fp["components"]:
        table.add_row("embodied (server)", fmt_g(fp["embodied_g"] - gpu_g), server_how)
        table.add_row("embodied (GPU)", fmt_g(gpu_g), fp.get("gpu_embodied_detail") or "no GPU used")
    else:
        table.add_row("embodied", fmt_g(fp["embodied_g"]), server_how)
    table.add_row("total CO2e", fmt_g(fp["total_g"]), "")
    if fp.get("units"):
        table.add_row(
            f"per {fp.get('unit') or 'unit'}",
            fmt_g(fp["g_per_unit"]),
            f"{fp['units']:g} {fp.get('unit') or 'units'}, {fmt_j(fp['j_per_unit'])} each",
        )
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table


def add_carbon_flags(p: argparse.ArgumentParser) -> None:
    """The carbon accounting settings (flags > environment > lowcarb.toml > defaults)."""
    p.add_argument("--region", help="country (FR, FRA, France) or cloud region (gcp:europe-west1)")
    p.add_argument("--intensity", type=finite_float, metavar="G_PER_KWH", help="grid intensity, gCO2e/kWh")
    p.add_argument("--pue", type=finite_float, help="power usage effectiveness, >= 1.0 (default 1.58)")
    p.add_argument("--embodied-kg", type=finite_float, help="hardware manufacturing footprint, kgCO2e")
    p.add_argument("--lifetime-years", type=finite_float, help="hardware lifetime, years")
    p.add_argument("--resource-share", type=finite_float, help="share of the machine reserved, (0, 1]")
    p.add_argument("--hardware-profile", help="server, desktop, laptop or workstation")
    p.add_argument("--cpu-power-w", type=finite_float, help="processor power at full load, W")
    p.add_argument("--sample-interval", type=finite_float, metavar="S", help="sampling period, s")
    p.add_argument(
        "--gpu-embodied-kg", type=finite_float,
        help="one GPU card's manufacturing footprint, kgCO2e (default 143, Boavizta's A100 card)",
    )
    p.add_argument("--gpu-lifetime-years", type=finite_float, help="GPU lifetime, years (default 3)")
    p.add_argument(
        "--host-logical-cpus",
        type=finite_float,
        metavar="N",
        help="logical CPUs of the host a VM runs on (default 96 for a server)",
    )
    p.add_argument(
        "--embodied-kg-per-vcpu",
        type=finite_float,
        metavar="KG",
        help="manufacturing footprint of one logical CPU of the host (default embodied-kg / N)",
    )
    p.add_argument(
        "--rapl-idle-w",
        type=finite_float,
        metavar="W",
        help="CPU package power of the idle machine (default: measured when the ledger starts)",
    )


def carbon_config(args: argparse.Namespace) -> CarbonConfig:
    """The CarbonConfig the carbon flags name, resolved against environment and lowcarb.toml."""
    from lowcarb.measure import load_carbon_config

    return load_carbon_config(
        region=args.region,
        intensity_g_per_kwh=args.intensity,
        pue=args.pue,
        embodied_kg=args.embodied_kg,
        lifetime_years=args.lifetime_years,
        resource_share=args.resource_share,
        hardware_profile=args.hardware_profile,
        cpu_power_w=args.cpu_power_w,
        sample_interval_s=args.sample_interval,
        gpu_embodied_kg=args.gpu_embodied_kg,
        gpu_lifetime_years=args.gpu_lifetime_years,
        host_logical_cpus=args.host_logical_cpus,
        embodied_kg_per_vcpu=args.embodied_kg_per_vcpu,
        rapl_idle_w=args.rapl_idle_w,
    )


def run_outcome(verb: str, result: Any) -> int:
    """The exit status of a finished `run_recipe` (RunResult), with one line on stderr when it
    did not complete: 130 interrupted, 1 failed (0 completed)."""
    from lowcarb.report.escape import plain

    if result.status == "interrupted":
        print(
            f"lowcarb {verb}: {plain(result.error)}; run {result.run_id} keeps its finished stages",
            file=sys.stderr,
        )
        return 130
    if result.status != "completed":
        details = result.artifacts_dir / "error.txt"
        where = f"; details in {details}" if details.exists() else ""
        print(
            f"lowcarb {verb}: error: {plain(result.error)} (run {result.run_id} marked "
            f"{result.status}{where})",
            file=sys.stderr,
        )
        return 1
    return 0
