"""muTransfer: tune a narrow proxy, train the wide target with the same values, verify, account.

1. proxy sweep: every (log2 lr, output multiplier, init scale) of a grid at the proxy width;
2. transfer: train the target width with the proxy's best values;
3. verify: a few learning rates around the transferred one at the target width;
4. account: the proxy sweep's measured energy against a direct sweep of the same grid at the
   target width - measured when `direct_sweep=True`, otherwise extrapolated from the measured
   target trials of steps 2-3 (mean energy per target trial x grid size, and the result says so) -
   and the loss gap of the transferred run to the best target run seen.

Every trial runs in its own ledger window (`lowcarb.measure.track`). The sweep is a plain grid
(the issue's log2 grid); identical trials (same width and values) are trained once and reused.
The task is character-level language modelling with the reference decoder (`charlm.py`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from lowcarb.errors import ConfigError
from lowcarb.measure import Footprint, track
from lowcarb.measure.config import CarbonConfig
from lowcarb.search.mup.charlm import CharCorpus, LMTrainConfig, train_lm
from lowcarb.search.mup.config import MupModelConfig, did_you_mean, reject_unknown
from lowcarb.search.mup.models import build_model
from lowcarb.search.result import Objective, SearchResult, TrialRecord, window_summary


@dataclass(frozen=True)
class HyperParams:
    log2_lr: float
    output_mult: float = 1.0
    init_std: float = 1.0

    @property
    def lr(self) -> float:
        return 2.0**self.log2_lr


@dataclass(frozen=True)
class MutransferConfig:
    model: MupModelConfig  # kind "lm"; its width is replaced by proxy/target width
    proxy_width: int
    target_width: int
    log2_lrs: tuple[float, ...]
    output_mults: tuple[float, ...] = (1.0,)
    init_stds: tuple[float, ...] = (1.0,)
    train: LMTrainConfig = field(default_factory=LMTrainConfig)
    seeds: tuple[int, ...] = (0,)
    verify_octaves: tuple[float, ...] = (-1.0, 1.0)
    direct_sweep: bool = False

    def __post_init__(self) -> None:
        if self.model.kind != "lm":
            raise ConfigError(
                f"mutransfer trains the character-level LM (model kind 'lm'), not {self.model.kind!r}"
            )
        if self.proxy_width < self.model.base_width:
            raise ConfigError(
                f"proxy width {self.proxy_width} is below the base width {self.model.base_width}"
            )
        if self.target_width <= self.proxy_width:
            raise ConfigError(
                f"target width {self.target_width} must be larger than the proxy width "
                f"{self.proxy_width}: muTransfer tunes the small model for the large one"
            )
        if not self.log2_lrs or not self.output_mults or not self.init_stds or not self.seeds:
            raise ConfigError("the sweep grid and the seeds must each have at least one value")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MutransferConfig:
        """From a recipe mapping: `model` and `train` are sub-mappings, lists become tuples."""
        reject_unknown(cls, raw, "mutransfer")
        if "model" not in raw or not isinstance(raw["model"], dict):
            raise ConfigError("a mutransfer recipe needs a 'model' mapping (base_width, depth, ...)")
        kw: dict[str, Any] = dict(raw)
        kw["model"] = MupModelConfig.from_dict({"kind": "lm", **raw["model"]})
        train = raw.get("train", {})
        train_known = {f.name for f in fields(LMTrainConfig)} - {"lr"}
        if not isinstance(train, dict) or set(train) - train_known:
            hint = did_you_mean(sorted(set(train) - train_known), train_known) if isinstance(train, dict) else ""
            raise ConfigError(
                f"'train' takes only {sorted(train_known)} (lr is what is swept){hint}"
            )
        kw["train"] = LMTrainConfig(**train)
        for key in ("log2_lrs", "output_mults", "init_stds", "verify_octaves"):
            if key in kw:
                kw[key] = tuple(float(v) for v in kw[key])
        if "seeds" in kw:
            kw["seeds"] = tuple(int(v) for v in kw["seeds"])
        return cls(**kw)

    def grid(self) -> list[HyperParams]:
        return [
            HyperParams(lr, om, init)
            for lr, om, init in itertools.product(self.log2_lrs, self.output_mults, self.init_stds)
        ]


@dataclass(frozen=True)
class Trial:
    stage: str  # proxy | transfer | verify | direct
    width: int
    hp: HyperParams
    val_loss: float | None  # mean over seeds; None when any seed diverged
    energy_j: float
    duration_s: float
    cpu_time_s: float
    energy_method: str
    reused_from: str | None = None  # the stage whose identical run was reused (no new cost)
    footprint: dict[str, Any] | None = None  # its ledger window (None when reused)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hp"]["lr"] = self.hp.lr
        return d


def _loss_key(t: Trial) -> float:
    return math.inf if t.val_loss is None else t.val_loss


@dataclass
class MutransferResult:
    config: MutransferConfig
    trials: list[Trial]
    transferred: HyperParams
    transfer_loss: float | None
    best_target: Trial
    proxy_energy_j: float
    direct_energy_j: float
    direct_energy_basis: str

    @property
    def loss_gap_pct(self) -> float | None:
        best = self.best_target.val_loss
        if self.transfer_loss is None or best is None:
            return None
        return 100.0 * (self.transfer_loss - best) / best

    @property
    def tuning_energy_ratio(self) -> float:
        return self.proxy_energy_j / self.direct_energy_j

    def to_dict(self) -> dict[str, Any]:
        return {
            "proxy_width": self.config.proxy_width,
            "target_width": self.config.target_width,
            "model": self.config.model.to_dict(),
            "train": asdict(self.config.train),
            "seeds": list(self.config.seeds),
            "transferred": {**asdict(self.transferred), "lr": self.transferred.lr},
            "transfer_loss": self.transfer_loss,
            "best_target": self.best_target.to_dict(),
            "loss_gap_pct": self.loss_gap_pct,
            "proxy_energy_j": self.proxy_energy_j,
            "direct_energy_j": self.direct_energy_j,
            "direct_energy_basis": self.direct_energy_basis,
            "tuning_energy_ratio": self.tuning_energy_ratio,
            "trials": [t.to_dict() for t in self.trials],
        }

    def to_search_result(self, name: str = "mutransfer") -> SearchResult:
        """The common search result: every trial (proxy sweep, transfer, verification, direct
        sweep) with its validation loss and energy; the transferred run is the chosen one."""
        trials = [_record(i, t) for i, t in enumerate(self.trials)]
        transfer = next(i for i, t in enumerate(self.trials) if t.stage == "transfer")
        gap = self.loss_gap_pct
        figures: dict[str, Any] = {
            "proxy_width": self.config.proxy_width,
            "target_width": self.config.target_width,
            "transferred_log2_lr": self.transferred.log2_lr,
            "transfer_loss": self.transfer_loss,
            "best_target_loss": self.best_target.val_loss,
            "best_target_log2_lr": self.best_target.hp.log2_lr,
            "loss_gap_pct": gap,
            "proxy_energy_j": self.proxy_energy_j,
            "direct_energy_j": self.direct_energy_j,
            "direct_energy_basis": self.direct_energy_basis,
            "tuning_energy_ratio": self.tuning_energy_ratio,
        }
        return SearchResult.from_trials(
            "mutransfer",
            name,
            (Objective("val_loss", "minimize"), Objective("trial_energy_j", "minimize")),
            trials,
            chosen=transfer,
            figures=figures,
            details={"model": self.config.model.to_dict(), "train": asdict(self.config.train)},
        )


def _record(number: int, t: Trial) -> TrialRecord:
    """One trial as a search record. A reused run cost nothing new: its footprint is zero and it
    carries no energy metric, so it never sits on the Pareto front as a free trial."""
    metrics: dict[str, float] = {} if t.val_loss is None else {"val_loss": t.val_loss}
    footprint = t.footprint
    if t.reused_from is None:
        metrics["trial_energy_j"] = t.energy_j
    else:
        footprint = {key: 0.0 for key in ("duration_s", "energy_j", "operational_g", "embodied_g", "co2_g")}
        footprint["reused_from"] = t.reused_from
    params = {"stage": t.stage, "width": t.width, "log2_lr": t.hp.log2_lr,
              "output_mult": t.hp.output_mult, "init_std": t.hp.init_std}
    state = "complete" if t.val_loss is not None else "failed"
    error = None if t.val_loss is not None else "diverged (infinite validation loss)"
    return TrialRecord(
        number, state, params, metrics, footprint, feasible=state == "complete", error=error
    )


def run_trial(
    stage: str,
    model: MupModelConfig,
    width: int,
    hp: HyperParams,
    corpus: CharCorpus,
    train: LMTrainConfig,
    seeds: Sequence[int],
    on_close: Callable[[Footprint], None] | None = None,
    carbon: CarbonConfig | None = None,
    device: torch.device | str | None = None,
) -> Trial:
    """Train `model` at `width` with `hp` for each seed inside one ledger window, measured with
    `carbon` (None: environment, lowcarb.toml, defaults), on `device` (None: the CPU)."""
    cfg = replace(
        model,
        width=width,
        output_mult=hp.output_mult,
        init_std=hp.init_std,
        vocab_size=corpus.vocab_size,
    )
    losses: list[float] = []
    name = f"mutransfer:{stage}:{cfg.parametrization}:w{width}:lr=2^{hp.log2_lr:g}"
    units = train.steps * len(seeds)
    with track(name, unit="step", units=units, config=carbon, on_close=on_close) as fp:
        for seed in seeds:
            torch.manual_seed(seed)
            net = build_model(cfg)
            if device is not None:
                net.to(device)
            out = train_lm(net, corpus, replace(train, lr=hp.lr, data_seed=seed))
            losses.append(out.val_loss)
    val = None if any(math.isinf(v) for v in losses) else sum(losses) / len(losses)
    method = ", ".join(f"{k}: {v}" for k, v in sorted(fp.methods.items()))
    return Trial(
        stage, width, hp, val, fp.energy_j, fp.duration_s, fp.cpu_time_s, method,
        footprint=window_summary(fp),
    )


def mutransfer(
    corpus: CharCorpus,
    config: MutransferConfig,
    *,
    on_close: Callable[[Footprint], None] | None = None,
    progress: Callable[[Trial], None] | None = None,
    carbon: CarbonConfig | None = None,
    device: torch.device | str | None = None,
) -> MutransferResult:
    """Run the four steps; see the module docstring. Every trial's window measures with
    `carbon` and is handed to `on_close` (a stored search run keeps them). Trials train on
    `device` (None: the CPU) in fp32: the learning rates muP transfers are fp32's."""
    trials: list[Trial] = []
    done: dict[tuple[int, HyperParams], Trial] = {}

    def run(stage: str, width: int, hp: HyperParams) -> Trial:
        if (width, hp) in done:
            prev = done[(width, hp)]
            t = replace(
                prev,
                stage=stage,
                energy_j=0.0,
                duration_s=0.0,
                cpu_time_s=0.0,
                reused_from=prev.stage,
                footprint=None,
            )
        else:
            t = run_trial(
                stage, config.model, width, hp, corpus, config.train, config.seeds, on_close, carbon,
                device,
            )
            done[(width, hp)] = t
        trials.append(t)
        if progress is not None:
            progress(t)
        return t

    grid = config.grid()
    proxy = [run("proxy", config.proxy_width, hp) for hp in grid]
    best_proxy = min(proxy, key=_loss_key)
    if best_proxy.val_loss is None:
        raise ConfigError("every proxy trial diverged; lower the learning-rate grid")
    chosen = best_proxy.hp
    target = [run("transfer", config.target_width, chosen)]
    for octave in config.verify_octaves:
        if octave != 0:
            target.append(
                run("verify", config.target_width, replace(chosen, log2_lr=chosen.log2_lr + octave))
            )
    if config.direct_sweep:
        target += [run("direct", config.target_width, hp) for hp in grid]
        direct_energy = sum(t.energy_j for t in target if t.stage == "direct" and not t.reused_from)
        # A direct trial reused from transfer/verify still cost a run: count that run's energy.
        direct_energy += sum(
            done[(t.width, t.hp)].energy_j for t in target if t.stage == "direct" and t.reused_from
        )
        basis = f"measured: {len(grid)} target trials"
    else:
        measured = [t for t in target if not t.reused_from]
        per_trial = sum(t.energy_j for t in measured) / len(measured)
        direct_energy = per_trial * len(grid)
        basis = (
            f"extrapolated: mean of {len(measured)} measured target trials x "
            f"{len(grid)} grid points"
        )
    proxy_energy = sum(t.energy_j for t in proxy if not t.reused_from)
    if direct_energy <= 0:
        raise ValueError("the target trials recorded no energy; is the ledger working?")
    return MutransferResult(
        config=config,
        trials=trials,
        transferred=chosen,
        transfer_loss=target[0].val_loss,
        best_target=min(target, key=_loss_key),
        proxy_energy_j=proxy_energy,
        direct_energy_j=direct_energy,
        direct_energy_basis=basis,
    )
