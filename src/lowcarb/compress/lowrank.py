"""Low-rank factorization of dense layers, with spectral initialization and Frobenius decay.

The method of Khodak, Tenenholtz, Mackey and Fusi, "Initialization and regularization of factorized
neural layers" (ICLR 2021), made practical for serving:

- A dense ``nn.Linear`` with weight W (m x n) becomes two thin layers ``u(v(x))`` with
  U (m x r) and V (r x n). An ``nn.Conv2d`` with kernel (out, in, kh, kw) is reshaped to the matrix
  M[(o, b), (c, a)] = W[o, c, a, b] of shape (out*kw) x (in*kh) and becomes a kh x 1 convolution
  (V, in -> r channels) followed by a 1 x kw convolution (U, r -> out channels). For square kernels
  this is the paper's (out*k) x (in*k) reshape.
- Spectral initialization: from the trained W, truncated SVD W ~ U_r S_r V_r^T, and
  U = U_r sqrt(S_r), V = sqrt(S_r) V_r^T. The balanced split (rather than folding S into one side)
  is what makes Frobenius decay act like weight decay on the product at initialization. At full
  rank the product reproduces W exactly (up to float rounding).
- Ranks: either one global parameter budget (keep ``param_ratio`` of the targeted layers' weight
  parameters, spending it on the singular directions that keep the most spectral energy), a
  per-layer energy threshold, or one fixed rank. A layer is never factorized where the rank would
  not save parameters (r >= mn / (m + n)).
- Frobenius decay: the recovery fine-tune penalises ||U V||_F^2 (not ||U||^2 + ||V||^2, which
  would shrink the factors towards unbalanced solutions), with the factors excluded from ordinary
  weight decay. ``frobenius_decay`` is the penalty (an ``extra_loss`` for ``lowcarb.train.fit``)
  and ``param_groups`` builds the AdamW groups that exclude the factors from weight decay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from lowcarb.compress.factorized import (
    Factorized,
    FactorizedConv2d,
    FactorizedLinear,
    as_matrix,
    break_even_rank,
    factorized_modules,
    matrix_shape,
)
from lowcarb.compress.saved import load_transformed as load
from lowcarb.compress.saved import save_transformed as save
from lowcarb.errors import ConfigError, ModelError
from lowcarb.models.surgery import count_parameters, read_directly, select_modules, set_module
from lowcarb.models.transforms import TransformSummary, record, register_transform
from lowcarb.train.progress import progress_bar

__all__ = [
    "FactorizedConv2d",
    "FactorizedLinear",
    "LowRankConfig",
    "apply",
    "factorized_modules",
    "frobenius_decay",
    "frobenius_decay_loss",
    "load",
    "param_groups",
    "restore",
    "save",
    "select_layers",
]


# ---------------------------------------------------------------------------------------------
# config and summary
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LowRankConfig:
    """How to factorize: exactly one of ``param_ratio``, ``energy`` and ``rank``.

    param_ratio: keep this fraction (0, 1] of the targeted layers' weight parameters, choosing
        ranks across layers to keep the most spectral energy (each layer's energy is normalised by
        its squared Frobenius norm, so layers of different scale compete fairly).
    energy: per layer, the smallest rank that keeps this fraction (0, 1] of the spectral energy.
    rank: one fixed rank for every targeted layer.
    targets / exclude: fnmatch patterns over module names (``"*encoder*"``); only ``nn.Linear``
        and (``include_conv``) ``nn.Conv2d`` modules are candidates.
    """

    param_ratio: float | None = 0.5
    energy: float | None = None
    rank: int | None = None
    targets: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    include_conv: bool = True

    def __post_init__(self) -> None:
        chosen = [k for k in ("param_ratio", "energy", "rank") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ConfigError(
                "LowRankConfig needs exactly one of param_ratio, energy or rank "
                f"(got {chosen or 'none'}); for example LowRankConfig(param_ratio=0.5) or "
                "LowRankConfig(param_ratio=None, rank=64)"
            )
        if self.param_ratio is not None and not 0 < self.param_ratio <= 1:
            raise ConfigError(
                f"param_ratio must be in (0, 1] (the fraction of parameters kept), got "
                f"{self.param_ratio}"
            )
        if self.energy is not None and not 0 < self.energy <= 1:
            raise ConfigError(
                f"energy must be in (0, 1] (the fraction of spectral energy kept), got {self.energy}"
            )
        if self.rank is not None and (isinstance(self.rank, bool) or self.rank < 1):
            raise ConfigError(f"rank must be a positive integer, got {self.rank}")
        if isinstance(self.targets, str) or isinstance(self.exclude, str):
            raise ConfigError("targets and exclude are tuples of patterns, e.g. ('*encoder*',)")
        if not self.targets:
            raise ConfigError("targets is empty; use ('*',) to consider every Linear/Conv2d")


# ---------------------------------------------------------------------------------------------
# target selection and rank choice
# ---------------------------------------------------------------------------------------------


def _candidates(model: nn.Module, include_conv: bool) -> dict[str, nn.Module]:
    kinds: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d) if include_conv else (nn.Linear,)
    # The factors of an already factorized layer are Linear/Conv2d too: never factorize them again.
    inner = tuple(f"{n}." for n in factorized_modules(model))
    direct = read_directly(model)  # e.g. attention's out_proj, whose weight its owner reads
    return {
        name: mod
        for name, mod in model.named_modules()
        if name and isinstance(mod, kinds) and not name.startswith(inner or ("\0",))
        and name not in direct
    }


def select_layers(model: nn.Module, cfg: LowRankConfig) -> dict[str, nn.Module]:
    """The layers ``apply`` would consider (by name): ``cfg.targets`` minus ``cfg.exclude`` among
    the Linear (and Conv2d) modules. A pattern that matches nothing is a ConfigError naming them."""
    cands = _candidates(model, cfg.include_conv)
    kinds = "Linear/Conv2d" if cfg.include_conv else "Linear"
    names = select_modules(cands, cfg.targets, cfg.exclude, kinds, listed_as="candidates are")
    return {n: cands[n] for n in names}


def _energies(mat: Tensor) -> Tensor:
    """Normalised spectral energy per singular direction (sums to 1)."""
    s = torch.linalg.svdvals(mat.double())
    e = s.pow(2)
    total = e.sum()
    return e / total if total > 0 else torch.full_like(e, 1.0 / len(e))


def _choose_ranks(
    layers: dict[str, nn.Module], cfg: LowRankConfig, energies: dict[str, Tensor]
) -> tuple[dict[str, int], dict[str, float], dict[str, str]]:
    """Ranks for the layers worth factorizing, the energy each keeps, and why others were skipped."""
    shapes = {n: matrix_shape(m) for n, m in layers.items()}
    ranks: dict[str, int] = {}
    if cfg.rank is not None:
        ranks = {n: min(cfg.rank, min(shapes[n])) for n in layers}
    elif cfg.energy is not None:
        for n, e in energies.items():
            cum = torch.cumsum(e, 0)
            # smallest r with cum[r-1] >= energy (tolerance for the float sum reaching 1.0)
            ranks[n] = int(
                torch.searchsorted(cum, torch.tensor(cfg.energy - 1e-12, dtype=cum.dtype))
            )
            ranks[n] = min(ranks[n] + 1, len(e))
    else:
        assert cfg.param_ratio is not None
        ranks = _budget_ranks(shapes, energies, cfg.param_ratio)

    chosen: dict[str, int] = {}
    kept: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for n, r in ranks.items():
        m, k = shapes[n]
        if r >= break_even_rank(m, k):
            skipped[n] = (
                f"rank {r} >= mn/(m+n) = {break_even_rank(m, k):.1f} for {m} x {k}: "
                "factorizing would not save parameters"
            )
            continue
        chosen[n] = r
        kept[n] = float(energies[n][:r].sum())
    return chosen, kept, skipped


def _budget_ranks(
    shapes: dict[str, tuple[int, int]], energies: dict[str, Tensor], ratio: float
) -> dict[str, int]:
    """Greedy fractional knapsack over singular directions.

    Every layer starts at rank 1 (a layer cannot vanish); each further direction k of layer i
    costs m_i + n_i parameters and is worth its normalised energy. Energies decrease with k, so
    taking directions by worth per parameter picks a prefix per layer, which is optimal for the
    relaxed problem. A layer whose rank reaches mn/(m+n) is cheaper kept dense: the loop then
    charges mn for it instead (never more than the factors it replaces).
    """
    budget = ratio * sum(m * n for m, n in shapes.values())
    ranks = {n: 1 for n in shapes}
    cost = {n: float(m + k) for n, (m, k) in shapes.items()}
    spent = sum(cost.values())
    if spent > budget:
        raise ConfigError(
            f"param_ratio={ratio} is below the minimum of rank 1 everywhere "
            f"({spent / (budget / ratio):.4f} of the targeted parameters); raise param_ratio"
        )
    # (worth per parameter, layer, k): the k-th direction (0-based) of each layer.
    order = sorted(
        (
            (float(energies[n][k]) / (m + c), n, k)
            for n, (m, c) in shapes.items()
            for k in range(1, min(m, c))
        ),
        key=lambda t: -t[0],
    )
    dense: set[str] = set()
    for _, n, k in order:
        if n in dense or k != ranks[n]:
            continue
        m, c = shapes[n]
        step = m + c
        if (ranks[n] + 1) >= break_even_rank(m, c):
            # Going dense costs mn in total; switch if the budget allows, else this layer is done.
            extra = m * c - cost[n]
            if spent + extra <= budget:
                spent += extra
                cost[n] = float(m * c)
                ranks[n] = min(m, c)
                dense.add(n)
            continue
        if spent + step > budget:
            continue
        spent += step
        cost[n] += step
        ranks[n] += 1
    return ranks


# ---------------------------------------------------------------------------------------------
# the transform
# ---------------------------------------------------------------------------------------------


def _weight_params(module: nn.Module) -> int:
    if isinstance(module, Factorized):
        return module.u.weight.numel() + module.v.weight.numel()
    return module.get_parameter("weight").numel()


def _factorized(mod: nn.Module, rank: int) -> nn.Module:
    new: nn.Module
    if isinstance(mod, nn.Linear):
        new = FactorizedLinear.from_dense(mod, rank)
    else:
        assert isinstance(mod, nn.Conv2d)  # _candidates selects Linear and Conv2d only
        new = FactorizedConv2d.from_dense(mod, rank)
    return new.train(mod.training)


def apply(model: nn.Module, config: LowRankConfig | None = None, *, quiet: bool = True) -> TransformSummary:
    """Factorize the targeted layers of ``model`` in place with spectral initialization.

    Details: ``ranks``, ``energy_kept`` (spectral energy each rank keeps), ``skipped`` (why),
    ``target_params_before`` / ``_after`` / ``target_ratio`` (weights of the targeted layers).
    ``quiet=False`` shows progress: two float64 SVDs per layer take about a minute for
    SmolLM2-135M's 90 MLP projections on a CPU.
    """
    cfg = config or LowRankConfig()
    layers = select_layers(model, cfg)
    params_before = count_parameters(model)
    target_before = sum(_weight_params(m) for m in layers.values())
    with progress_bar(quiet) as bar:
        task = bar.add_task("lowrank: spectra", total=len(layers), status="")
        energies = {}
        for name, mod in layers.items():
            energies[name] = _energies(as_matrix(mod))
            bar.update(task, advance=1)
        ranks, kept, skipped = _choose_ranks(layers, cfg, energies)
        task = bar.add_task("lowrank: factorize", total=len(ranks), status="")
        for name, rank in ranks.items():
            set_module(model, name, _factorized(layers[name], rank))
            bar.update(task, advance=1)
    target_after = sum(_weight_params(model.get_submodule(n)) for n in layers)
    record(model, cfg, {"ranks": ranks})
    details = {
        "ranks": ranks,
        "energy_kept": kept,
        "skipped": skipped,
        "target_params_before": target_before,
        "target_params_after": target_after,
        "target_ratio": target_after / target_before,
    }
    return TransformSummary(
        "lowrank", cfg, params_before, count_parameters(model), list(ranks), details, model=model
    )


# ---------------------------------------------------------------------------------------------
# Frobenius decay
# ---------------------------------------------------------------------------------------------


def frobenius_decay(model: nn.Module, coeff: float) -> Tensor:
    """``coeff / 2 * sum ||U V||_F^2`` over the factorized layers.

    Computed in trace form, ||UV||_F^2 = tr((U^T U)(V V^T)): two r x r Gram matrices instead of the
    m x n product. The 1/2 makes its gradient ``coeff * (UV) V^T`` for U, the same scale as a
    weight decay of ``coeff`` on the dense weight.
    """
    if coeff < 0:
        raise ConfigError(f"Frobenius decay coefficient must be >= 0, got {coeff}")
    total: Tensor | None = None
    for mod in factorized_modules(model).values():
        u, v = mod.factors()
        term = ((u.T @ u) * (v @ v.T)).sum()  # tr(A B) for symmetric A, B is sum(A * B)
        total = term if total is None else total + term
    if total is None:
        raise ConfigError(
            "frobenius_decay found no factorized layers; call lowcarb.compress.lowrank.apply "
            "on the model first"
        )
    return 0.5 * coeff * total


def frobenius_decay_loss(coeff: float) -> Callable[[nn.Module], Tensor]:
    """``extra_loss`` for ``lowcarb.train.fit``: ``fit(..., extra_loss=frobenius_decay_loss(1e-4))``."""
    if coeff < 0:
        raise ConfigError(f"Frobenius decay coefficient must be >= 0, got {coeff}")
    return partial(frobenius_decay, coeff=coeff)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: the low-rank factors without weight decay (Frobenius decay
    regularises them), matrices elsewhere with ``weight_decay``, biases and norms without.

    Only parameters with ``requires_grad`` are included.
    """
    factor_ids = set()
    for mod in factorized_modules(model).values():
        factor_ids.add(id(mod.u.weight))
        factor_ids.add(id(mod.v.weight))
    factors, decayed, plain = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in factor_ids:
            factors.append(p)
        elif p.ndim >= 2:
            decayed.append(p)
        else:
            plain.append(p)
    groups = [
        {"params": factors, "weight_decay": 0.0, "name": "lowrank_factors"},
        {"params": decayed, "weight_decay": weight_decay, "name": "decayed"},
        {"params": plain, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


# ---------------------------------------------------------------------------------------------
# reload: the factorized structure on a fresh model (``save`` / ``load`` replay the log)
# ---------------------------------------------------------------------------------------------


def restore(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """Give ``model`` the factorized structure named by ``ranks`` (weights to be loaded after)."""
    for name, rank in ranks.items():
        try:
            mod = model.get_submodule(name)
        except AttributeError as exc:
            raise ModelError(f"module {name!r} from the saved ranks is not in this model") from exc
        new: nn.Module
        if isinstance(mod, nn.Linear):
            new = FactorizedLinear(mod.in_features, mod.out_features, rank, mod.bias is not None)
        elif isinstance(mod, nn.Conv2d):
            new = FactorizedConv2d(mod, rank)
        else:
            raise ModelError(f"module {name!r} is a {type(mod).__name__}, not Linear/Conv2d")
        new.to(device=mod.weight.device, dtype=mod.weight.dtype)
        set_module(model, name, new)
    return model


register_transform(
    LowRankConfig, "lowrank",
    lambda model, _cfg, structure: restore(model, {str(k): int(v) for k, v in structure["ranks"].items()}),
)  # fmt: skip
