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


# ---------------------------------------------------------------------------------------------
# pipeline verbs: run, report, compare   (pipeline)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# technique verbs   (compress, search, ...)
# ---------------------------------------------------------------------------------------------


# Each entry: (add_parser function). Append yours here.
VERBS: list[Callable[[argparse._SubParsersAction], None]] = []


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
