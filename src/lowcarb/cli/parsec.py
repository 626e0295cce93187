"""`parsec [RECIPE]`: PARSEC and Weightless PARSEC architecture search (lowcarb.search.parsec)."""

from __future__ import annotations

import argparse
import dataclasses

from lowcarb.cli import common

# Flags that set a field of the recipe's parsec: section (lowcarb.search.parsec.ParsecRunConfig).
SECTION_FLAGS = ("space", "method", "score", "iterations", "samples", "top", "epochs", "seed", "warm_start")


def add_parsec(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "parsec",
        help="probabilistic architecture search (PARSEC, or training-free Weightless PARSEC)",
        description=(
            "Learn a distribution over the architectures of a space (cnn: a cell of conv3x3, "
            "conv5x5, separable conv, max/avg pool, identity and zero edges; text: embedding "
            "width, depth, conv/attention mixers, pooling) on the recipe's data (default: the "
            "embedded digits), holding one architecture in memory at a time; retrain the most "
            "probable architectures from scratch and report them. --method weightless scores "
            "architectures at initialisation instead of training shared weights. Settings come "
            "from the recipe's parsec: section (the flags below override it), the measurement "
            "from its carbon: section. Writes result.json, prior.json (pass it to --warm-start "
            "to start a larger search) and search.html/.md, and stores the run."
        ),
    )
    p.add_argument("recipe", nargs="?", help="recipe YAML: its data:, carbon: and parsec: sections (default: digits)")
    p.add_argument("--space", choices=["cnn", "text"], help="search space (default cnn)")
    p.add_argument("--method", choices=["parsec", "weightless"], help="default parsec")
    p.add_argument("--score", choices=["naswot", "synflow", "gradnorm"],
                   help="weightless: the training-free score (default naswot)")
    p.add_argument("--iterations", type=int, help="search iterations (default 60 parsec, 20 weightless)")
    p.add_argument("--samples", type=int, help="architectures per iteration (default 4 parsec, 8 weightless)")
    p.add_argument("--top", type=int, help="architectures retrained at the end (default 3)")
    p.add_argument("--epochs", type=int, help="retraining epochs (default 10)")
    p.add_argument("--warm-start", metavar="PRIOR.json", help="start from a saved prior")
    p.add_argument("--seed", type=int, help="default 0")
    common.add_overrides_flag(p, "override a recipe field, e.g. --set data.max_length=64; repeatable")
    common.add_device_flags(p)
    p.add_argument("--out", default="parsec-out", metavar="DIR",
                   help="folder for result.json, prior.json and search.html (default ./parsec-out)")
    common.add_store_flag(p)
    p.set_defaults(handler=_cmd_parsec)


def _cmd_parsec(args: argparse.Namespace) -> int:
    from lowcarb.pipeline import load_recipe
    from lowcarb.pipeline.parsec_run import parsec_recipe
    from lowcarb.search.parsec import ParsecRunConfig

    common.require_at_least_one(args, ("iterations", "samples", "top", "epochs"))
    recipe = load_recipe(args.recipe, [*args.overrides, *common.device_overrides(args)])
    flags = {name: getattr(args, name) for name in SECTION_FLAGS if getattr(args, name) is not None}
    section = dataclasses.replace(recipe.parsec or ParsecRunConfig(), **flags)
    stored = parsec_recipe(
        dataclasses.replace(recipe, parsec=section),
        folder=args.out,
        store=common.open_store(args),
        command=common.command_line(),
        progress=print,
    )
    result, folder = stored.result, stored.artifacts_dir
    best = result.trial(result.chosen) if result.chosen is not None else None
    print(f"run: {stored.run_id}")
    if best is not None:
        test = best.metrics.get("test_accuracy")
        print(f"best: dev {best.metrics['dev_accuracy']:.4f} test {'n/a' if test is None else f'{test:.4f}'}, "
              f"{int(best.metrics['params'])} parameters: {best.params['architecture']}")
    figures = result.figures
    print(f"search {common.fmt_j(figures['search_energy_j'])} ({figures['architectures_evaluated']} architectures), "
          f"retraining {common.fmt_j(figures['retrain_energy_j'])} ({figures['architectures_retrained']} architectures)")
    print(f"result: {folder / 'result.json'}  prior: {folder / 'prior.json'}  report: {folder / 'search.html'}")
    return 0
