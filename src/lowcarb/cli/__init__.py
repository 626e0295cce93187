"""The `lowcarb` command line: the only place that parses command-line strings.

One module per verb family. Each has an `add_<verb>(subparsers)` that declares its arguments and a
`_cmd_<verb>(args)` that turns them into typed configs and calls the library. Shared flags and
formatting live in `lowcarb.cli.common`.

Errors the user can fix are `lowcarb.errors.LowcarbError`s, raised by the library or here: printed
as one line, exit status 2. Any other exception is a bug in lowcarb: it keeps its traceback, a
line says so, exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from lowcarb.cli.autodistil import add_autodistil
from lowcarb.cli.common import AddVerb, Handler, OneLineParser, one_line_warnings
from lowcarb.cli.compress import add_export_onnx
from lowcarb.cli.ledger import LEDGER_VERBS
from lowcarb.cli.mup import add_mup, add_mutransfer
from lowcarb.cli.parsec import add_parsec
from lowcarb.cli.run import add_compare, add_report, add_run
from lowcarb.cli.search import add_search
from lowcarb.errors import LowcarbError
from lowcarb.files import os_error_message
from lowcarb.interrupts import Terminated, interrupt_behind, interrupt_on_signals
from lowcarb.report.escape import plain

__all__ = ["VERBS", "build_parser", "main"]

# The order of `lowcarb --help`. A new verb family: a module with its add_<verb>, listed here.
VERBS: list[AddVerb] = [
    *LEDGER_VERBS,
    add_run,
    add_report,
    add_compare,
    add_mup,
    add_mutransfer,
    add_search,
    add_export_onnx,
    add_parsec,
    add_autodistil,
]


def build_parser() -> argparse.ArgumentParser:
    # Usage errors are one line too (the subparsers inherit the class).
    parser = OneLineParser(
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
    one_line_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        # SIGTERM (timeout, Slurm, docker stop) and SIGHUP end a verb as Ctrl-C does: stored runs
        # are marked interrupted and their finished work is kept.
        with interrupt_on_signals():
            return handler(args)
    except LowcarbError as exc:
        print(f"lowcarb {args.verb}: error: {plain(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        return _interrupted(args.verb, exc)
    except OSError as exc:
        if exc.filename is None:
            return _bug(args.verb)
        # A file the system refused (a full disk, permissions): the user's to fix, not a bug.
        message = os_error_message(exc, exc.filename, "use")
        print(f"lowcarb {args.verb}: error: {plain(message)}", file=sys.stderr)
        return 2
    except Exception as exc:
        interrupt = interrupt_behind(exc)
        if interrupt is not None:  # a library's clean-up failed on the way out of an interrupt
            return _interrupted(args.verb, interrupt)
        return _bug(args.verb)


def _interrupted(verb: str, exc: KeyboardInterrupt) -> int:
    if isinstance(exc, Terminated):
        print(f"lowcarb {verb}: {exc}", file=sys.stderr)
        return 128 + exc.signum
    print(f"lowcarb {verb}: interrupted", file=sys.stderr)
    return 130


def _bug(verb: str) -> int:
    traceback.print_exc()
    print(
        f"lowcarb {verb}: this is a bug in lowcarb, not in what you typed; please report "
        "it with the traceback above",
        file=sys.stderr,
    )
    return 1
