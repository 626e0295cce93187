"""Coordinate check: do activations keep their size as the model widens?

Train the same model a few steps at several widths, record the mean absolute activation of every
layer at every step, and fit log(mean |x|) against log(width). Under a correct muP every slope is
near zero (activations and their updates are Theta(1) in width); under the standard
parametrization with Adam the updates grow with width and the slopes after the first step are
clearly positive. The check passes when every muP slope is within `tolerance`; the SP run is
recorded beside it for contrast (and to show the check can fail).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lowcarb.errors import ConfigError
from lowcarb.search.mup.config import MupModelConfig
from lowcarb.search.mup.layers import FeedForward, MuReadout, Probe, SelfAttention
from lowcarb.search.mup.models import build_model
from lowcarb.search.mup.optim import optimizer
from lowcarb.train.batches import model_device, model_inputs, to_device

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class CoordCheckConfig:
    widths: tuple[int, ...] = (32, 64, 128, 256)
    steps: int = 4
    lr: float = 1e-2
    optimizer: str = "adamw"
    batch_size: int = 16
    seq_len: int = 16
    seeds: tuple[int, ...] = (0, 1)
    # Largest |d log(mean |activation|) / d log(width)| accepted under muP. SP with Adam reaches
    # 0.5-1.5 after one step. Under muP every layer stays within about 0.2 of flat except the
    # attention logits just after the zero-initialised query first moves: q.k then has a coherent
    # part (Theta(1) under the 1/d_head scale) and an incoherent one that falls like
    # d_head^-1/2, and at d_head 8-64 the mix gives slopes near -0.3. Hence 0.4.
    tolerance: float = 0.4

    def __post_init__(self) -> None:
        if len(self.widths) < 2:
            raise ConfigError("the coordinate check needs at least two widths to fit a slope")
        if sorted(self.widths) != list(self.widths) or len(set(self.widths)) != len(self.widths):
            raise ConfigError(f"widths must be strictly increasing, got {self.widths}")
        if self.steps < 1:
            raise ConfigError("steps must be at least 1")
        if not self.seeds:
            raise ConfigError("give at least one seed")
        if self.tolerance <= 0:
            raise ConfigError("tolerance must be positive")


@dataclass(frozen=True)
class CoordRecord:
    parametrization: str
    width: int
    step: int
    layer: str
    kind: str
    mean_abs: float


@dataclass
class CoordCheckResult:
    config: CoordCheckConfig
    model: MupModelConfig
    records: list[CoordRecord]
    # slopes[parametrization][(layer, step)] = d log(mean |x|) / d log(width)
    slopes: dict[str, dict[tuple[str, int], float]] = field(default_factory=dict)

    def worst(self, parametrization: str) -> tuple[str, int, float]:
        (layer, step), slope = max(self.slopes[parametrization].items(), key=lambda kv: abs(kv[1]))
        return layer, step, slope

    def passes(self, parametrization: str = "mup") -> bool:
        return all(abs(s) <= self.config.tolerance for s in self.slopes[parametrization].values())

    @property
    def passed(self) -> bool:
        """The verdict: muP keeps every layer's activation size flat in width."""
        return self.passes("mup")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "config": asdict(self.config),
            "model": self.model.to_dict(),
            "passed": self.passed,
            "sp_passed": self.passes("sp") if "sp" in self.slopes else None,
        }
        for p, slopes in self.slopes.items():
            layer, step, s = self.worst(p)
            out[f"{p}_worst"] = {"layer": layer, "step": step, "slope": s}
            out[f"{p}_slopes"] = [
                {"layer": layer, "step": step, "slope": s} for (layer, step), s in slopes.items()
            ]
        out["records"] = [asdict(r) for r in self.records]
        return out


def _layer_kind(module: nn.Module, name: str) -> str | None:
    if isinstance(module, MuReadout):
        return "readout"
    if isinstance(module, SelfAttention):
        return "attn_out"
    if isinstance(module, FeedForward):
        return "mlp_out"
    if isinstance(module, Probe):
        leaf = name.rsplit(".", 1)[-1]
        return {"embed": "embedding", "logits": "attn_logits", "out": "residual"}.get(
            leaf, "hidden"
        )
    return None


def default_batches(cfg: MupModelConfig, check: CoordCheckConfig, seed: int) -> list[Batch]:
    """Fixed synthetic batches with learnable structure, the same at every width.

    Structure matters: with uniformly random tokens two different inputs overlap only by
    O(1/sqrt(width)), so at small widths the incoherent part of an update (which shrinks like
    width^-1/2) hides the coherent part muP keeps at Theta(1), and the check would measure noise.
    So the LM reads arithmetic sequences over 8 symbols, the encoder labels them by their first
    symbol, and the MLP sees 4 noisy clusters.
    """
    g = torch.Generator().manual_seed(10_000 + seed)
    n_sym = min(8, cfg.vocab_size)
    out: list[Batch] = []
    for _ in range(check.steps):
        b = check.batch_size
        if cfg.kind == "mlp":
            centers = torch.randn(4, cfg.d_in, generator=torch.Generator().manual_seed(seed))
            c = torch.randint(0, 4, (b,), generator=g)
            x = centers[c] + 0.5 * torch.randn(b, cfg.d_in, generator=g)
            out.append({"x": x, "labels": c % cfg.num_labels})
            continue
        t = min(check.seq_len + 1, cfg.max_len)
        start = torch.randint(0, n_sym, (b, 1), generator=g)
        stride = torch.randint(1, n_sym, (b, 1), generator=g)
        ids = (start + stride * torch.arange(t)) % n_sym
        if cfg.kind == "lm":
            out.append({"input_ids": ids[:, :-1], "labels": ids[:, 1:]})
        else:
            out.append({"input_ids": ids[:, :-1], "labels": start[:, 0] % cfg.num_labels})
    return out


def loss_of(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Cross-entropy for any of the reference models (LM: next token at every position)."""
    logits = model(**model_inputs(batch))
    labels = batch["labels"]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def _run_one(
    cfg: MupModelConfig,
    check: CoordCheckConfig,
    batches: list[Batch],
    seed: int,
    device: torch.device | str | None = None,
) -> list[tuple[int, str, str, float]]:
    torch.manual_seed(seed)
    model = build_model(cfg)
    if device is not None:
        model.to(device)
    opt = optimizer(model, check.optimizer, lr=check.lr)
    current: dict[str, float] = {}
    kinds: dict[str, str] = {}
    hooks = []
    for name, module in model.named_modules():
        kind = _layer_kind(module, name)
        if kind is None:
            continue
        kinds[name] = kind

        def hook(_m: nn.Module, _i: Any, out: torch.Tensor, name: str = name) -> None:
            current[name] = out.detach().abs().mean().item()

        hooks.append(module.register_forward_hook(hook))
    rows: list[tuple[int, str, str, float]] = []
    try:
        for step, batch in enumerate(batches):
            current.clear()
            loss = loss_of(model, to_device(batch, model_device(model)))
            rows.extend((step, n, kinds[n], v) for n, v in current.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for h in hooks:
            h.remove()
    return rows


def log_log_slope(widths: Iterable[int], values: Iterable[float]) -> float:
    """Least-squares slope of log(value) against log(width); 0 for a layer that is exactly zero
    at every width (a zero-initialised readout at step 0), infinite if only some are zero."""
    ws, vs = list(widths), list(values)
    if all(v == 0.0 for v in vs):
        return 0.0
    if any(not (v > 0.0) or not math.isfinite(v) for v in vs):
        return math.inf
    xs = [math.log(w) for w in ws]
    ys = [math.log(v) for v in vs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def coord_check(
    model: MupModelConfig,
    config: CoordCheckConfig | None = None,
    batches: Callable[[MupModelConfig, CoordCheckConfig, int], list[Batch]] | None = None,
    parametrizations: tuple[str, ...] = ("mup", "sp"),
    *,
    device: torch.device | str | None = None,
) -> CoordCheckResult:
    """Run the check for `model` (its `width` is ignored; `base_width` is kept) at each width,
    on `device` (None: the CPU; the batches are drawn on the host, the same on any device)."""
    check = config or CoordCheckConfig()
    if check.widths[0] < model.base_width:
        raise ConfigError(
            f"the smallest width {check.widths[0]} is below the base width {model.base_width}"
        )
    make = batches or default_batches
    records: list[CoordRecord] = []
    for p in parametrizations:
        for w in check.widths:
            cfg = replace(model, width=w, parametrization=p)  # type: ignore[arg-type]
            sums: dict[tuple[int, str, str], float] = defaultdict(float)
            for seed in check.seeds:
                for step, name, kind, v in _run_one(cfg, check, make(cfg, check, seed), seed, device):
                    sums[(step, name, kind)] += v / len(check.seeds)
            records.extend(
                CoordRecord(p, w, step, name, kind, v) for (step, name, kind), v in sums.items()
            )
    result = CoordCheckResult(check, model, records)
    for p in parametrizations:
        series: dict[tuple[str, int], dict[int, float]] = defaultdict(dict)
        for r in records:
            if r.parametrization == p:
                series[(r.layer, r.step)][r.width] = r.mean_abs
        result.slopes[p] = {
            key: log_log_slope(check.widths, [by_w[w] for w in check.widths])
            for key, by_w in series.items()
        }
    return result


def plot(result: CoordCheckResult, path: str | Path) -> Path:
    """PNG: one row per layer kind, SP on the left and muP on the right, a line per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    params = [p for p in ("sp", "mup") if p in result.slopes]
    kinds = sorted({r.kind for r in result.records})
    steps = result.config.steps
    fig, axes = plt.subplots(
        len(kinds), len(params), figsize=(4.2 * len(params), 2.6 * len(kinds)), squeeze=False
    )
    cmap = plt.get_cmap("viridis")
    for j, p in enumerate(params):
        for i, kind in enumerate(kinds):
            ax = axes[i][j]
            # Mean over the layers of one kind, per step and width (pass/fail is per layer).
            acc: dict[tuple[int, int], list[float]] = defaultdict(list)
            for r in result.records:
                if r.parametrization == p and r.kind == kind:
                    acc[(r.step, r.width)].append(r.mean_abs)
            for step in range(steps):
                ws = [w for w in result.config.widths if (step, w) in acc]
                ys = [sum(acc[(step, w)]) / len(acc[(step, w)]) for w in ws]
                if any(y > 0 for y in ys):
                    ax.plot(
                        ws,
                        [max(y, 1e-12) for y in ys],
                        marker="o",
                        color=cmap(step / max(steps - 1, 1)),
                        label=f"step {step}",
                    )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{'muP' if p == 'mup' else 'SP'}: {kind}", fontsize=9)
            if i == len(kinds) - 1:
                ax.set_xlabel("width")
            if j == 0:
                ax.set_ylabel("mean |activation|")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=cmap(step / max(steps - 1, 1)), marker="o", label=f"step {step}")
        for step in range(steps)
    ]
    axes[0][-1].legend(handles=handles, fontsize=7)
    verdict = "PASS" if result.passed else "FAIL"
    fig.suptitle(
        f"coordinate check ({result.model.kind}, {result.config.optimizer} lr={result.config.lr:g}): "
        f"muP {verdict} at |slope| <= {result.config.tolerance:g}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def check_and_save(
    model: MupModelConfig,
    config: CoordCheckConfig,
    folder: str | Path,
    *,
    device: torch.device | str | None = None,
) -> tuple[CoordCheckResult, Path]:
    """`coord_check` (on `device`), then its plot (coord_check.png) and its figures
    (coord_check.json) in `folder`, checked writable before the training starts. Returns the
    result and the plot."""
    from lowcarb.files import check_writable_folder, replace_file, write_json

    folder = check_writable_folder(folder, "--out")
    result = coord_check(model, config, device=device)
    png = folder / "coord_check.png"
    with replace_file(png) as tmp:  # a full disk leaves no half-drawn PNG
        plot(result, tmp)
    write_json(folder / "coord_check.json", result.to_dict(), indent=1, non_finite="null")
    return result, png
