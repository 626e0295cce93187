"""`parsec [RECIPE]`: PARSEC and Weightless PARSEC architecture search (lowcarb.search.parsec)."""

from __future__ import annotations

import argparse

from lowcarb.cli import common
from lowcarb.errors import ConfigError


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
    common.add_store_flag(p)
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

    common.require_at_least_one(args, ("iterations", "samples", "top", "epochs"))
    if args.recipe:
        from lowcarb.pipeline import load_recipe

        data_config = load_recipe(args.recipe, []).data
    else:
        data_config = DataConfig()
    data = load_data(data_config)
    tokenizer = None
    if args.space == "cnn":
        if data.kind != "image":
            raise ConfigError("--space cnn needs image data (the default digits); use --space text for text data")
        space = cnn_space(CnnSpaceConfig(input_shape=tuple(data.feature_shape), num_labels=data.num_labels))
    else:
        if data.kind != "text":
            raise ConfigError("--space text needs text data: give a recipe whose data: names a .tsv/.csv/.jsonl")
        from lowcarb.models.byte_tokenizer import VOCAB_SIZE, ByteTokenizer

        tokenizer = ByteTokenizer()
        space = text_space(TextSpaceConfig(vocab_size=VOCAB_SIZE, num_labels=data.num_labels,
                                           max_length=data_config.max_length))
    retrain = TrainConfig(epochs=args.epochs, batch_size=64, lr=3e-3, seed=args.seed, quiet=True)
    settings = {"top": args.top, "retrain": retrain, "seed": args.seed, "warm_start": args.warm_start}
    if args.iterations is not None:
        settings["iterations"] = args.iterations
    if args.samples is not None:
        settings["samples"] = args.samples
    if args.method == "parsec":
        # The warm-up (pi frozen while shared weights train) stays a fifth of the search at most.
        warmup = min(ParsecConfig.warmup_iterations, settings.get("iterations", ParsecConfig.iterations) // 5)
        config = ParsecConfig(**settings, warmup_iterations=warmup)
        result = parsec.search(space, data, config, tokenizer=tokenizer, progress=print)
    else:
        result = weightless.search(space, data, WeightlessConfig(score=args.score, **settings),
                                   tokenizer=tokenizer, progress=print)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.prior.save(out / "prior.json")
    summary = result.to_dict()
    (out / "result.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    if not store_disabled():
        store = common.open_store(args)
        run_id = store.create_run("search", f"{args.method}:{space.name}", command=common.command_line(),
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
    print(f"search {common.fmt_j(result.search_footprint.energy_j)} ({result.evaluated} architectures), "
          f"retraining {common.fmt_j(result.retrain_footprint.energy_j)} ({len(result.candidates)} architectures)")
    print(f"result: {out / 'result.json'}  prior: {out / 'prior.json'}")
    return 0
