"""`autodistil RECIPE --flops-budget F`: AutoDistil student search (lowcarb.search.autodistil)."""

from __future__ import annotations

import argparse

from lowcarb.cli import common
from lowcarb.errors import ConfigError


def add_autodistil(sub: common.Subparsers) -> None:
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
    p.add_argument("--flops-budget", type=common.finite_float, required=True, metavar="F",
                   help="forward FLOPs per example at --seq-len tokens; a value in (0, 1] is a "
                   "fraction of the teacher's FLOPs (0.5: half)")
    p.add_argument("--seq-len", type=int, help="tokens per example for FLOPs (default: data.max_length)")
    p.add_argument("--steps", type=int, help="supernet training steps per sub-space (default 300)")
    p.add_argument("--subspaces", type=_counts, metavar="K[,K...]",
                   help="sub-space counts: one search per count, the one whose chosen student has the "
                   "lowest held-out relation loss wins (default 2,3; a single count, e.g. 3 for tiny, "
                   "small and base, costs one search)")
    common.add_overrides_flag(p, "override a recipe field (as in `lowcarb run`); repeatable")
    common.add_recipe_run_flags(p, "no progress bars or stage lines")
    p.set_defaults(handler=_cmd_autodistil)


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like 3 or 2,3, got {text!r}") from None
    if any(k < 1 for k in counts):
        raise argparse.ArgumentTypeError(f"sub-space counts must be >= 1, got {text!r}")
    return counts


def _cmd_autodistil(args: argparse.Namespace) -> int:
    from lowcarb.pipeline import run_recipe
    from lowcarb.pipeline.stage_recipe import recipe_with_stage
    from lowcarb.report.terminal import final_table

    if not args.flops_budget > 0:
        raise ConfigError(f"--flops-budget must be > 0, got {args.flops_budget:g}")
    common.require_at_least_one(args, ("seq_len", "steps"))
    settings = {"flops_budget": args.flops_budget, "seq_len": args.seq_len,
                "steps_per_subspace": args.steps, "subspaces": args.subspaces}
    recipe = recipe_with_stage(
        args.recipe, "autodistil", settings, common.recipe_overrides(args)
    )
    console = common.make_console()
    result = run_recipe(recipe, out_dir=args.out, quiet=args.quiet, store=common.open_store(args),
                        command=common.command_line())
    if result.status != "completed":
        return common.run_outcome("autodistil", result)
    console.print(final_table(result.run))
    record = next(s for s in result.run["stages"] if s["name"] == "autodistil" and not s.get("auto"))
    notes = record["summary"]
    console.print(
        f"chosen student {notes['student']}: {notes['student_flops'] / 1e6:.1f} MFLOPs per example "
        f"(budget {notes['budget_flops'] / 1e6:.1f}, teacher {notes['teacher_flops'] / 1e6:.1f}), "
        f"{sum(p['candidates'] for p in notes['partitions'].values())} students searched with "
        f"{' and '.join(notes['partitions'])} sub-spaces; {notes['chosen_subspace_count']} sub-spaces chosen "
        "(lowest held-out relation loss)"
    )
    console.print(f"searched students: {result.artifacts_dir / 'autodistil' / 'candidates.md'}")
    report = result.reports.get("html") or result.reports.get("md")
    if report is not None:
        console.print(f"report: {report}")
    return 0
