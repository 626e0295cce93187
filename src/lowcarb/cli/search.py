"""`search RECIPE`: the recipe's search: section as an Optuna study (lowcarb.search.hpo)."""

from __future__ import annotations

import argparse
import logging

from lowcarb.cli import common
from lowcarb.errors import ConfigError


def add_search(sub: common.Subparsers) -> None:
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
    common.add_overrides_flag(p, "override a recipe field, e.g. --set search.n_trials=10; repeatable")
    p.add_argument(
        "--storage",
        metavar="URL",
        help="shared study storage, e.g. postgresql://user:pass@host:5432/db "
        "(default: search.db in the run folder)",
    )
    p.add_argument("--study", metavar="NAME", help="study name to create or join (default: recipe name)")
    p.add_argument("--n-trials", type=int, metavar="N", help="finished trials the study needs")
    common.add_recipe_run_flags(p, "no per-trial lines")
    p.set_defaults(handler=_cmd_search)


def _cmd_search(args: argparse.Namespace) -> int:
    from lowcarb.pipeline import load_recipe
    from lowcarb.pipeline.search_run import search_recipe
    from lowcarb.report.search import search_lines

    if args.n_trials is not None and args.n_trials < 1:
        raise ConfigError(f"--n-trials must be >= 1, got {args.n_trials}")
    recipe = load_recipe(args.recipe, common.recipe_overrides(args))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
    # A failed or interrupted trial is one of our lines (its run keeps the details, the summary
    # counts it); Optuna's own report of it is two lines and a traceback (Ctrl-C printed one).
    logging.getLogger("optuna.study._optimize").setLevel(logging.ERROR)

    def on_trial(number: int, status: str, params) -> None:
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        print(f"trial {number:>3} {status:<9} {shown}", flush=True)

    done = search_recipe(
        recipe,
        storage=args.storage,
        study=args.study,
        n_trials=args.n_trials,
        out_dir=args.out,
        store=common.open_store(args),
        command=common.command_line(),
        on_trial=None if args.quiet else on_trial,
    )
    for line in search_lines(done.result):
        print(line)
    print(f"run: {done.run_id}  report: {done.artifacts_dir / 'search.html'}")
    return 0
