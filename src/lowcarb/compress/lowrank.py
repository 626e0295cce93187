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

import fnmatch
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "FactorizedConv2d",
    "FactorizedLinear",
    "LowRankConfig",
    "LowRankSummary",
    "apply",
    "factorized_modules",
    "frobenius_decay",
    "frobenius_decay_loss",
    "load",
    "param_groups",
    "restore",
    "save",
]

LOWRANK_FILE = "lowrank.json"


# ---------------------------------------------------------------------------------------------
# factorized layers
# ---------------------------------------------------------------------------------------------


class FactorizedLinear(nn.Module):
    """``y = U (V x) + b``: ``v`` is an r x n Linear without bias, ``u`` an m x r Linear with the bias.

    Two plain ``nn.Linear`` children (rather than raw parameters) so that dynamic int8 quantization
    and ONNX export treat the factors like any other Linear.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.v = nn.Linear(in_features, rank, bias=False)
        self.u = nn.Linear(rank, out_features, bias=bias)

    @classmethod
    def from_dense(cls, layer: nn.Linear, rank: int) -> FactorizedLinear:
        """Spectral initialization from a trained Linear (any rank up to min(m, n))."""
        w = layer.weight.detach()
        m, n = w.shape
        if not 1 <= rank <= min(m, n):
            raise ValueError(f"rank must be in [1, {min(m, n)}] for a {m} x {n} Linear, got {rank}")
        u, v = _spectral_factors(w, rank)
        new = cls(n, m, rank, bias=layer.bias is not None)
        new.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.u.weight.copy_(u)
            new.v.weight.copy_(v)
            if layer.bias is not None:
                new.u.bias.copy_(layer.bias.detach())
        return new

    def factors(self) -> tuple[Tensor, Tensor]:
        """(U, V) as matrices: U is m x r, V is r x n."""
        return self.u.weight, self.v.weight

    def dense_weight(self) -> Tensor:
        return self.u.weight @ self.v.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.u(self.v(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class FactorizedConv2d(nn.Module):
    """A kh x 1 convolution to ``rank`` channels (V) then a 1 x kw convolution (U) with the bias.

    Stride, padding and dilation split by axis: the first convolution handles the height, the
    second the width. Both are exact because the first convolution has no bias (so zero padding of
    its output equals zero padding of the input) and acts column by column.
    """

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        super().__init__()
        if conv.groups != 1:
            raise ValueError(
                f"grouped convolutions (groups={conv.groups}) cannot be factorized; "
                "exclude this module from the targets"
            )
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        kh, kw = conv.kernel_size
        sh, sw = conv.stride
        dh, dw = conv.dilation
        if isinstance(conv.padding, str):
            pad_h: str | tuple[int, int] = conv.padding
            pad_w: str | tuple[int, int] = conv.padding
        else:
            ph, pw = conv.padding
            pad_h, pad_w = (ph, 0), (0, pw)
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.kernel_size = (kh, kw)
        self.rank = rank
        self.v = nn.Conv2d(
            conv.in_channels, rank, (kh, 1), stride=(sh, 1), padding=pad_h, dilation=(dh, 1),
            bias=False, padding_mode=conv.padding_mode,
        )  # fmt: skip
        self.u = nn.Conv2d(
            rank, conv.out_channels, (1, kw), stride=(1, sw), padding=pad_w, dilation=(1, dw),
            bias=conv.bias is not None, padding_mode=conv.padding_mode,
        )  # fmt: skip

    @staticmethod
    def as_matrix(weight: Tensor) -> Tensor:
        """(out, in, kh, kw) -> M[(o, b), (c, a)] of shape (out*kw) x (in*kh)."""
        o, c, kh, kw = weight.shape
        return weight.permute(0, 3, 1, 2).reshape(o * kw, c * kh)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, rank: int) -> FactorizedConv2d:
        """Spectral initialization from a trained Conv2d."""
        w = conv.weight.detach()
        o, c, kh, kw = w.shape
        mat = cls.as_matrix(w)
        if not 1 <= rank <= min(mat.shape):
            raise ValueError(
                f"rank must be in [1, {min(mat.shape)}] for this Conv2d "
                f"({mat.shape[0]} x {mat.shape[1]} as a matrix), got {rank}"
            )
        u, v = _spectral_factors(mat, rank)  # u: (o*kw) x r, v: r x (c*kh)
        new = cls(conv, rank)
        new.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            # V[r, (c, a)] -> first conv weight (r, c, kh, 1)
            new.v.weight.copy_(v.reshape(rank, c, kh, 1))
            # U[(o, b), r] -> second conv weight (o, r, 1, kw)
            new.u.weight.copy_(u.reshape(o, kw, rank).permute(0, 2, 1).reshape(o, rank, 1, kw))
            if conv.bias is not None:
                new.u.bias.copy_(conv.bias.detach())
        return new

    def factors(self) -> tuple[Tensor, Tensor]:
        """(U, V) as matrices in the (out*kw) x (in*kh) layout of ``as_matrix``."""
        o, r, _, kw = self.u.weight.shape
        c, kh = self.in_channels, self.kernel_size[0]
        u = self.u.weight.reshape(o, r, kw).permute(0, 2, 1).reshape(o * kw, r)
        v = self.v.weight.reshape(r, c * kh)
        return u, v

    def dense_weight(self) -> Tensor:
        """The equivalent (out, in, kh, kw) kernel."""
        u, v = self.factors()
        o, c = self.out_channels, self.in_channels
        kh, kw = self.kernel_size
        return (u @ v).reshape(o, kw, c, kh).permute(0, 2, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.u(self.v(x))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"rank={self.rank}"
        )


Factorized = (FactorizedLinear, FactorizedConv2d)


def _spectral_factors(w: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """U_r sqrt(S_r), sqrt(S_r) V_r^T from a float64 SVD (float32 SVD loses the full-rank identity)."""
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(w.dtype), (root[:, None] * vh[:rank]).to(w.dtype)


def _matrix_shape(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if isinstance(module, nn.Conv2d):
        o, c, kh, kw = module.weight.shape
        return o * kw, c * kh
    raise TypeError(f"cannot factorize {type(module).__name__}")


def _as_matrix(module: nn.Module) -> Tensor:
    if isinstance(module, nn.Linear):
        return module.weight.detach()
    return FactorizedConv2d.as_matrix(module.weight.detach())


def _break_even_rank(m: int, n: int) -> float:
    """r(m + n) < mn saves parameters only for r below this."""
    return m * n / (m + n)


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
            raise ValueError(
                "LowRankConfig needs exactly one of param_ratio, energy or rank "
                f"(got {chosen or 'none'}); for example LowRankConfig(param_ratio=0.5) or "
                "LowRankConfig(param_ratio=None, rank=64)"
            )
        if self.param_ratio is not None and not 0 < self.param_ratio <= 1:
            raise ValueError(
                f"param_ratio must be in (0, 1] (the fraction of parameters kept), got "
                f"{self.param_ratio}"
            )
        if self.energy is not None and not 0 < self.energy <= 1:
            raise ValueError(
                f"energy must be in (0, 1] (the fraction of spectral energy kept), got {self.energy}"
            )
        if self.rank is not None and (isinstance(self.rank, bool) or self.rank < 1):
            raise ValueError(f"rank must be a positive integer, got {self.rank}")
        if isinstance(self.targets, str) or isinstance(self.exclude, str):
            raise ValueError("targets and exclude are tuples of patterns, e.g. ('*encoder*',)")
        if not self.targets:
            raise ValueError("targets is empty; use ('*',) to consider every Linear/Conv2d")


@dataclass
class LowRankSummary:
    params_before: int
    params_after: int
    modules_changed: list[str]
    ranks: dict[str, int]
    energy_kept: dict[str, float]
    skipped: dict[str, str]
    target_params_before: int
    target_params_after: int
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def target_ratio(self) -> float:
        """Weight parameters of the targeted layers after / before."""
        return self.target_params_after / self.target_params_before

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["target_ratio"] = self.target_ratio
        return out


# ---------------------------------------------------------------------------------------------
# target selection and rank choice
# ---------------------------------------------------------------------------------------------


def _candidates(model: nn.Module, include_conv: bool) -> dict[str, nn.Module]:
    kinds: tuple[type, ...] = (nn.Linear, nn.Conv2d) if include_conv else (nn.Linear,)
    # The factors of an already factorized layer are Linear/Conv2d too: never factorize them again.
    inner = tuple(f"{n}." for n in factorized_modules(model))
    return {
        name: mod
        for name, mod in model.named_modules()
        if name and isinstance(mod, kinds) and not name.startswith(inner or ("\0",))
    }


def _select(model: nn.Module, cfg: LowRankConfig) -> dict[str, nn.Module]:
    cands = _candidates(model, cfg.include_conv)
    kinds = "Linear/Conv2d" if cfg.include_conv else "Linear"
    if not cands:
        raise ValueError(f"the model has no {kinds} modules to factorize")
    listing = _listing(cands)
    for pat in cfg.targets:
        if not any(fnmatch.fnmatchcase(n, pat) for n in cands):
            raise ValueError(
                f"target pattern {pat!r} matches no {kinds} module; candidates are: {listing}"
            )
    chosen = {
        n: m
        for n, m in cands.items()
        if any(fnmatch.fnmatchcase(n, p) for p in cfg.targets)
        and not any(fnmatch.fnmatchcase(n, p) for p in cfg.exclude)
    }
    if not chosen:
        raise ValueError(
            f"targets {list(cfg.targets)} minus exclude {list(cfg.exclude)} leave no module; "
            f"candidates are: {listing}"
        )
    return chosen


def _listing(names: dict[str, Any], limit: int = 24) -> str:
    keys = list(names)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _energies(mat: Tensor) -> Tensor:
    """Normalised spectral energy per singular direction (sums to 1)."""
    s = torch.linalg.svdvals(mat.double())
    e = s.pow(2)
    total = e.sum()
    return e / total if total > 0 else torch.full_like(e, 1.0 / len(e))


def _choose_ranks(
    layers: dict[str, nn.Module], cfg: LowRankConfig
) -> tuple[dict[str, int], dict[str, float], dict[str, str]]:
    """Ranks for the layers worth factorizing, the energy each keeps, and why others were skipped."""
    shapes = {n: _matrix_shape(m) for n, m in layers.items()}
    energies = {n: _energies(_as_matrix(m)) for n, m in layers.items()}
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
        if r >= _break_even_rank(m, k):
            skipped[n] = (
                f"rank {r} >= mn/(m+n) = {_break_even_rank(m, k):.1f} for {m} x {k}: "
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
        raise ValueError(
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
        if (ranks[n] + 1) >= _break_even_rank(m, c):
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


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _weight_params(module: nn.Module) -> int:
    if isinstance(module, Factorized):
        return module.u.weight.numel() + module.v.weight.numel()
    return module.weight.numel()


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def apply(model: nn.Module, config: LowRankConfig | None = None) -> LowRankSummary:
    """Factorize the targeted layers of ``model`` in place with spectral initialization."""
    cfg = config or LowRankConfig()
    layers = _select(model, cfg)
    params_before = _count(model)
    target_before = sum(_weight_params(m) for m in layers.values())
    ranks, kept, skipped = _choose_ranks(layers, cfg)
    for name, rank in ranks.items():
        mod = layers[name]
        new: nn.Module
        if isinstance(mod, nn.Linear):
            new = FactorizedLinear.from_dense(mod, rank)
        else:
            new = FactorizedConv2d.from_dense(mod, rank)
        new.train(mod.training)
        _set_module(model, name, new)
    target_after = sum(_weight_params(model.get_submodule(n)) for n in layers)
    return LowRankSummary(
        params_before=params_before,
        params_after=_count(model),
        modules_changed=list(ranks),
        ranks=ranks,
        energy_kept=kept,
        skipped=skipped,
        target_params_before=target_before,
        target_params_after=target_after,
        config=asdict(cfg),
    )


def factorized_modules(model: nn.Module) -> dict[str, FactorizedLinear | FactorizedConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, Factorized)}


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
        raise ValueError(f"Frobenius decay coefficient must be >= 0, got {coeff}")
    total: Tensor | None = None
    for mod in factorized_modules(model).values():
        u, v = mod.factors()
        term = ((u.T @ u) * (v @ v.T)).sum()  # tr(A B) for symmetric A, B is sum(A * B)
        total = term if total is None else total + term
    if total is None:
        raise ValueError(
            "frobenius_decay found no factorized layers; call lowcarb.compress.lowrank.apply "
            "on the model first"
        )
    return 0.5 * coeff * total


def frobenius_decay_loss(coeff: float) -> Callable[[nn.Module], Tensor]:
    """``extra_loss`` for ``lowcarb.train.fit``: ``fit(..., extra_loss=frobenius_decay_loss(1e-4))``."""
    if coeff < 0:
        raise ValueError(f"Frobenius decay coefficient must be >= 0, got {coeff}")
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
# save / reload: a safetensors state dict plus the ranks, no pickles
# ---------------------------------------------------------------------------------------------


def restore(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """Give ``model`` the factorized structure named by ``ranks`` (weights to be loaded after)."""
    for name, rank in ranks.items():
        try:
            mod = model.get_submodule(name)
        except AttributeError as exc:
            raise ValueError(f"module {name!r} from the saved ranks is not in this model") from exc
        new: nn.Module
        if isinstance(mod, nn.Linear):
            new = FactorizedLinear(mod.in_features, mod.out_features, rank, mod.bias is not None)
        elif isinstance(mod, nn.Conv2d):
            new = FactorizedConv2d(mod, rank)
        else:
            raise ValueError(f"module {name!r} is a {type(mod).__name__}, not Linear/Conv2d")
        new.to(device=mod.weight.device, dtype=mod.weight.dtype)
        _set_module(model, name, new)
    return model


def save(model: nn.Module, folder: str | Path) -> Path:
    """Write ``model.safetensors`` and ``lowrank.json`` (the ranks) into ``folder``."""
    from safetensors.torch import save_model

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    ranks = {n: m.rank for n, m in factorized_modules(model).items()}
    save_model(model, str(out / "model.safetensors"))
    (out / LOWRANK_FILE).write_text(json.dumps({"format": 1, "ranks": ranks}, indent=2) + "\n")
    return out


def load(model: nn.Module, folder: str | Path) -> nn.Module:
    """Rebuild the factorized structure on a freshly built base ``model`` and load the weights."""
    from safetensors.torch import load_model

    src = Path(folder)
    meta_path = src / LOWRANK_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} not found: is {src} a folder written by lowrank.save?"
        )
    meta = json.loads(meta_path.read_text())
    restore(model, {str(k): int(v) for k, v in meta["ranks"].items()})
    load_model(model, str(src / "model.safetensors"))
    return model
