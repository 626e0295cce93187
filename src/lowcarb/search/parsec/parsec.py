"""PARSEC (Casale, Gordon and Fusi, 2019): learn a distribution over architectures, not a
continuous relaxation of all of them.

    result = search(cnn_space(), load_data(DataConfig()), ParsecConfig(iterations=60))
    result.best.arch, result.best.test_accuracy, result.search_footprint.energy_j
    result.prior.save("prior.json")    # warm-starts a larger search: ParsecConfig(warm_start=...)

Each iteration samples K architectures from pi. Each is built alone (only its modules exist),
takes its weights from the shared weight store, makes one SGD step on a training batch and is
scored by its log-likelihood on a validation batch; normalised importance weights
w_k ~ p(y_val | x_val, alpha_k, W) then move pi along sum_k w_k grad log p(alpha_k | pi).
At the end the most probable architecture and the most probable others sampled are retrained
from scratch and evaluated; search and retraining are separate ledger windows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lowcarb.data import DataBundle
from lowcarb.errors import ConfigError
from lowcarb.measure import Footprint
from lowcarb.search.ledger import SearchLedger
from lowcarb.search.parsec.prior import Prior
from lowcarb.search.parsec.retrain import Candidate, check_data, cycle, train_architecture
from lowcarb.search.parsec.space import Architecture, Space, arch_key
from lowcarb.search.parsec.weights import WeightStore
from lowcarb.search.result import Objective, SearchResult, TrialRecord, window_summary
from lowcarb.train import TrainConfig, forward, set_seed
from lowcarb.train.batches import model_device, to_device


@dataclass(frozen=True)
class ParsecConfig:
    """Search settings. `likelihood_scale` tempers the likelihood: importance weights are
    softmax(likelihood_scale x mean validation log-likelihood per example). The untempered
    likelihood of a whole batch (scale = batch size) puts all weight on one sample from the very
    first noisy step; a small scale lets evidence accumulate over iterations instead."""

    iterations: int = 60
    samples: int = 4  # K architectures per iteration
    batch_size: int = 64
    val_batch_size: int = 128
    weight_lr: float = 0.05
    weight_momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip_norm: float | None = 5.0
    prior_lr: float = 0.5
    likelihood_scale: float = 10.0
    warmup_iterations: int = 10  # shared weights train with pi frozen: early likelihoods are noise
    top: int = 3  # architectures retrained from scratch at the end
    retrain: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=10, batch_size=64, lr=3e-3, quiet=True)
    )
    seed: int = 0
    warm_start: str | None = None  # a saved prior.json

    def __post_init__(self) -> None:
        for name in ("iterations", "samples", "batch_size", "val_batch_size", "top"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ParsecConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_iterations < 0 or self.warmup_iterations >= self.iterations:
            raise ConfigError(
                f"ParsecConfig.warmup_iterations must be in [0, iterations), got {self.warmup_iterations}"
            )
        if self.weight_lr <= 0 or self.prior_lr <= 0 or self.likelihood_scale <= 0:
            raise ConfigError("ParsecConfig.weight_lr, prior_lr and likelihood_scale must be > 0")


@dataclass
class ParsecResult:
    method: str  # "parsec" or "weightless"
    space: str
    prior: Prior
    candidates: list[Candidate]  # retrained, in the order tried; best = highest dev accuracy
    search_footprint: Footprint
    retrain_footprint: Footprint
    history: list[dict[str, Any]]
    settings: dict[str, Any]
    evaluated: int  # architectures sampled and scored during the search
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> Candidate:
        return max(self.candidates, key=lambda c: (c.dev_accuracy, c.log_prob))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "space": self.space,
            "best": self.best.to_dict(),
            "most_probable": self.prior.most_probable(),
            "candidates": [c.to_dict() for c in self.candidates],
            "search_footprint": self.search_footprint.to_dict(),
            "retrain_footprint": self.retrain_footprint.to_dict(),
            "search_energy_j": self.search_footprint.energy_j,
            "retrain_energy_j": self.retrain_footprint.energy_j,
            "evaluated": self.evaluated,
            "history": self.history,
            "settings": self.settings,
            "prior": self.prior.to_dict(),
            **self.extra,
        }

    def to_search_result(self) -> SearchResult:
        """The common search result: the retrained architectures are the trials (dev accuracy
        against parameters), the best is chosen, the search and retraining windows are the cost."""
        trials = [
            TrialRecord(
                number=i,
                state="complete",
                params={"architecture": arch_key(c.arch)},
                metrics={
                    "dev_accuracy": c.dev_accuracy,
                    **({} if c.test_accuracy is None else {"test_accuracy": c.test_accuracy}),
                    "params": float(c.params),
                    "log_prob": c.log_prob,
                },
                footprint=c.footprint,
            )
            for i, c in enumerate(self.candidates)
        ]
        best = self.best
        return SearchResult.from_trials(
            self.method,
            f"{self.method}:{self.space}",
            (Objective("dev_accuracy", "maximize"), Objective("params", "minimize")),
            trials,
            windows=[self.search_footprint, self.retrain_footprint],
            chosen=self.candidates.index(best),
            figures={
                "architectures_evaluated": self.evaluated,
                "architectures_retrained": len(self.candidates),
                "search_energy_j": self.search_footprint.energy_j,
                "retrain_energy_j": self.retrain_footprint.energy_j,
                **{k: v for k, v in self.extra.items() if isinstance(v, int | float | str)},
            },
            details={"most_probable": self.prior.most_probable(), "settings": self.settings},
        )


def begin(
    space: Space, data: DataBundle, warm_start: str | None, seed: int, tokenizer: Any
) -> tuple[Prior, torch.Generator]:
    """What both searches do first: check the data fits the space, the prior (uniform or warm
    started), a seeded generator for sampling architectures."""
    check_data(space, data, tokenizer)
    return initial_prior(space, warm_start), torch.Generator().manual_seed(seed)


def initial_prior(space: Space, warm_start: str | Path | None) -> Prior:
    return Prior(space) if warm_start is None else Prior.load(warm_start, space)


def importance_weights(scores: list[float], scale: float) -> list[float]:
    s = torch.tensor(scores, dtype=torch.float64) * scale
    return torch.softmax(s, dim=0).tolist()


def parsec_step(
    space: Space,
    arch: Architecture,
    store: WeightStore,
    train_batch: dict[str, torch.Tensor],
    val_batch: dict[str, torch.Tensor],
    config: ParsecConfig,
) -> tuple[float, nn.Module]:
    """One architecture, alone: weights from the store, one SGD step, validation log-likelihood
    (mean per example). Returns it and the built model (for inspection; drop it to free it)."""
    built = space.build(arch)
    store.load_into(built.parts)
    model = built.model.train()
    device = model_device(model)  # the space builds where the search runs (Space.on)
    train_batch, val_batch = to_device(train_batch, device), to_device(val_batch, device)
    loss = nn.functional.cross_entropy(forward(model, train_batch), train_batch["labels"])
    model.zero_grad(set_to_none=True)
    loss.backward()
    store.sgd_step(
        built.parts,
        config.weight_lr,
        config.weight_momentum,
        config.weight_decay,
        config.grad_clip_norm,
    )
    store.save_from(built.parts)
    # Batch statistics (train mode) at validation: the shared BN running statistics mix many
    # architectures and are not this one's.
    with torch.no_grad():
        logits = forward(model, val_batch)
        loglik = -float(nn.functional.cross_entropy(logits, val_batch["labels"]))
    return loglik, model


def retrain_top(
    method: str,
    space: Space,
    prior: Prior,
    seen: dict[str, Architecture],
    data: DataBundle,
    config_top: int,
    retrain: TrainConfig,
    tokenizer: Any,
    progress: Callable[[str], None] | None,
    ledger: SearchLedger | None = None,
) -> tuple[list[Candidate], Footprint]:
    """The most probable architecture, then the most probable distinct others sampled, each
    retrained from scratch inside one ledger window (one nested window per architecture)."""
    ledger = ledger or SearchLedger()
    picks: dict[str, Architecture] = {}
    best = prior.most_probable()
    picks[arch_key(best)] = best
    for key, arch in sorted(seen.items(), key=lambda kv: -prior.log_prob(kv[1])):
        if len(picks) >= config_top:
            break
        picks.setdefault(key, arch)
    candidates: list[Candidate] = []
    with ledger.window(f"{method}:retrain", unit="architecture", units=len(picks)) as fp:
        for i, arch in enumerate(picks.values()):
            with ledger.part(f"{method}:retrain {i}", unit="architecture", units=1) as part:
                cand, _ = train_architecture(
                    space, arch, data, retrain, tokenizer, prior.log_prob(arch)
                )
            cand = replace(cand, footprint=window_summary(part))
            candidates.append(cand)
            if progress:
                progress(
                    f"retrained: dev {cand.dev_accuracy:.4f} test {cand.test_accuracy}  {arch_key(arch)}"
                )
    return candidates, fp


def search(
    space: Space,
    data: DataBundle,
    config: ParsecConfig | None = None,
    *,
    tokenizer: Any = None,
    progress: Callable[[str], None] | None = None,
    ledger: SearchLedger | None = None,
) -> ParsecResult:
    """Run PARSEC on `space` with `data`'s train (steps) and dev (likelihood) splits.

    ledger: the carbon settings of the search's windows and where they are stored."""
    config = config or ParsecConfig()
    ledger = ledger or SearchLedger()
    prior, gen = begin(space, data, config.warm_start, config.seed, tokenizer)
    set_seed(config.seed)
    train_batches = cycle(data, "train", config.batch_size, tokenizer, config.seed)
    val_batches = cycle(data, "dev", config.val_batch_size, tokenizer, config.seed + 10_000)
    store = WeightStore()
    history: list[dict[str, Any]] = []
    seen: dict[str, Architecture] = {}
    start = time.perf_counter()
    with ledger.window(
        "parsec:search", unit="architecture", units=config.iterations * config.samples
    ) as search_fp:
        for it in range(config.iterations):
            val_batch = next(
                val_batches
            )  # one validation batch per iteration: samples compared alike
            archs, logliks = [], []
            for _ in range(config.samples):
                arch = prior.sample(gen)
                loglik, model = parsec_step(
                    space, arch, store, next(train_batches), val_batch, config
                )
                del model  # only one architecture's modules alive at a time
                archs.append(arch)
                logliks.append(loglik)
                seen[arch_key(arch)] = arch
            weights = importance_weights(logliks, config.likelihood_scale)
            if it >= config.warmup_iterations:
                prior.update(archs, weights, config.prior_lr)
            history.append(
                {
                    "iteration": it,
                    "mean_loglik": sum(logliks) / len(logliks),
                    "max_weight": max(weights),
                    "entropy_nats": prior.entropy_nats(),
                }
            )
            if progress and (it + 1) % max(1, config.iterations // 10) == 0:
                progress(
                    f"iteration {it + 1}/{config.iterations}: mean val log-lik {history[-1]['mean_loglik']:.3f}, "
                    f"pi entropy {history[-1]['entropy_nats']:.2f} nats, {time.perf_counter() - start:.0f} s"
                )
    candidates, retrain_fp = retrain_top(
        "parsec", space, prior, seen, data, config.top, config.retrain, tokenizer, progress, ledger
    )
    return ParsecResult(
        method="parsec",
        space=space.name,
        prior=prior,
        candidates=candidates,
        search_footprint=search_fp,
        retrain_footprint=retrain_fp,
        history=history,
        settings=asdict(config),
        evaluated=config.iterations * config.samples,
        extra={"weight_store_keys": len(store), "weight_store_params": store.numel()},
    )

