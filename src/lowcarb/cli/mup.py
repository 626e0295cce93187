"""muP verbs: the coordinate check (`mup coord-check`) and muTransfer (`mutransfer`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lowcarb.cli import common
from lowcarb.errors import ConfigError

if TYPE_CHECKING:
    from lowcarb.search.mup.mutransfer import Trial


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"expected comma-separated integers like 32,64,128, got {text!r}") from None


def add_mup(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "mup",
        help="muP tools: the coordinate check",
        description=(
            "Tools for the maximal-update parametrization (muP). coord-check trains a model a few "
            "steps at several widths and passes when activations stay flat in width. To tune a "
            "small proxy and transfer its values, see `lowcarb mutransfer`."
        ),
    )
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
    c.add_argument("--lr", type=common.finite_float, default=1e-2, help="base learning rate (default 0.01)")
    c.add_argument("--optimizer", choices=["adamw", "adam", "sgd"], default="adamw")
    c.add_argument("--seeds", default="0,1", help="averaged (default 0,1)")
    c.add_argument("--tolerance", type=common.finite_float, default=0.4, help="largest |slope| (default 0.4)")
    c.add_argument("--out", default="coord-check", metavar="DIR",
                   help="folder for coord_check.png and coord_check.json (default ./coord-check)")
    common.add_device_flags(c, precision=False)  # fp32: the coordinates muP is defined on
    c.set_defaults(handler=_cmd_mup_coord_check)


def _cmd_mup_coord_check(args: argparse.Namespace) -> int:
    from lowcarb.search.mup import MupModelConfig
    from lowcarb.search.mup.coord_check import CoordCheckConfig, check_and_save
    from lowcarb.train.device import resolve_device

    device = resolve_device(args.device)  # before any work: a GPU that is not there stops here
    widths, seeds = _int_list(args.widths), _int_list(args.seeds)
    base = args.base_width or widths[0]
    check = CoordCheckConfig(widths=widths, steps=args.steps, lr=args.lr,
                             optimizer=args.optimizer, seeds=seeds, tolerance=args.tolerance)
    model = MupModelConfig(kind=args.model, width=base, base_width=base)
    result, png = check_and_save(model, check, args.out, device=device)
    for p in ("mup", "sp"):
        layer, step, slope = result.worst(p)
        verdict = "pass" if result.passes(p) else "fail"
        print(f"{'muP' if p == 'mup' else 'SP ':<3}  {verdict}  worst slope {slope:+.2f} "
              f"({layer}, step {step}), tolerance {check.tolerance:g}")
    print(f"plot: {png}")
    return 0 if result.passed else 1


def add_mutransfer(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "mutransfer",
        help="tune a narrow proxy, train the wide model with its values, verify, account",
        description=(
            "Sweep the learning rate (and output multiplier, init scale) of a character-level LM "
            "at the proxy width, train the target width with the best values, verify a few "
            "learning rates around them, and compare the proxy sweep's energy with a direct "
            "sweep at the target width (measured with direct_sweep: true, else extrapolated). "
            "RECIPE is an ordinary recipe (name:, carbon: as for `lowcarb run`) with a "
            "mutransfer: section: text (a .txt, or .tsv/.csv with `column`; relative paths are "
            "read from the recipe's folder), optional val_text, limit, model {base_width, depth, "
            "n_heads, ...}, proxy_width, target_width, log2_lrs, output_mults, init_stds, train "
            "{steps, batch_size, seq_len, ...}, seeds, verify_octaves, direct_sweep. The run is "
            "stored like every search, with search.html/.md in its folder."
        ),
    )
    p.add_argument("recipe", help="recipe YAML with a mutransfer: section")
    common.add_overrides_flag(p, "override a recipe field, e.g. --set mutransfer.proxy_width=64; repeatable")
    p.add_argument("--out", default="mutransfer.json", metavar="FILE",
                   help="result JSON (default ./mutransfer.json)")
    p.add_argument("--runs", metavar="DIR",
                   help="parent folder of the run's artifacts (default ./lowcarb-runs)")
    common.add_device_flags(p, precision=False)  # trials train in fp32: muP's learning rates
    common.add_store_flag(p)
    p.set_defaults(handler=_cmd_mutransfer)


def _print_trial(t: Trial) -> None:
    loss = "diverged" if t.val_loss is None else f"{t.val_loss:.4f}"
    cost = f"reused from {t.reused_from}" if t.reused_from else f"{t.energy_j:.1f} J"
    print(f"{t.stage:<8} width {t.width:<5} lr 2^{t.hp.log2_lr:g}  val loss {loss}  {cost}")


def _cmd_mutransfer(args: argparse.Namespace) -> int:
    from lowcarb.pipeline.mutransfer_run import load_mutransfer_recipe, mutransfer_recipe

    stored = mutransfer_recipe(
        load_mutransfer_recipe(args.recipe, [*args.overrides, *common.device_overrides(args)]),
        result_file=args.out,
        out_dir=args.runs,
        store=common.open_store(args),
        command=common.command_line(),
        progress=_print_trial,
    )
    f = stored.result.figures
    gap = f["loss_gap_pct"]
    print(f"transferred lr 2^{f['transferred_log2_lr']:g}: target val loss "
          f"{f['transfer_loss']}, best target {f['best_target_loss']} "
          f"(lr 2^{f['best_target_log2_lr']:g}); loss gap "
          f"{'n/a' if gap is None else f'{gap:.2f} %'}")
    print(f"tuning energy: proxy sweep {f['proxy_energy_j']:.1f} J vs direct sweep "
          f"{f['direct_energy_j']:.1f} J ({f['direct_energy_basis']}); ratio "
          f"{f['tuning_energy_ratio']:.3f}")
    print(f"result: {args.out}  run: {stored.run_id}  report: {stored.artifacts_dir / 'search.html'}")
    return 0
