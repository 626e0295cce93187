"""Weightless PARSEC (lowcarb's definition; the primary text could not be found).

The same distribution learning as PARSEC, but each sampled architecture is scored without
training any weights: a training-free score (see `scores`) of the architecture at initialisation
on one training mini-batch, no validation pass. The candidates share their initialised operations
(`shared_init`: one module per weight-store key, seeded by the key), so scoring a candidate is
assembling it and one forward pass, not building and initialising a network. There is no weight store and no training
until the final architectures are retrained from scratch. Importance weights use the centred
ranks of the K scores (scores have no common scale, ranks do): w_k = softmax(sharpness * u_k),
u_k in [-0.5, 0.5]. An architecture's score is deterministic, so repeats are looked up, not
recomputed.

    taus = compare_scores(space, batches, archs, trained_accuracies)   # Kendall tau per score
    result = search(space, data, WeightlessConfig(score=max(taus, key=taus.get)))

Kendall tau against trained accuracy tells when a score can be trusted on a space: near 0, the
search is a random search with extra steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from lowcarb.data import DataBundle
from lowcarb.errors import ConfigError
from lowcarb.search.ledger import SearchLedger
from lowcarb.search.parsec.parsec import ParsecResult, begin, retrain_top
from lowcarb.search.parsec.scores import SCORES, kendall_tau, score_fn
from lowcarb.search.parsec.shared_init import SharedInit, shared_init
from lowcarb.search.parsec.space import Architecture, Space, arch_key
from lowcarb.train import TrainConfig, set_seed

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class WeightlessConfig:
    score: str = "naswot"
    iterations: int = 20
    samples: int = 8
    score_batches: int = 1  # "a few batches" at initialisation
    batch_size: int = 64
    prior_lr: float = 0.5
    sharpness: float = 4.0
    top: int = 3
    retrain: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=10, batch_size=64, lr=3e-3, quiet=True)
    )
    seed: int = 0
    warm_start: str | None = None
    # Candidates share initialised operations (one per weight-store key); False builds and
    # initialises every candidate on its own under `seed` (the slower, original way).
    shared_init: bool = True

    def __post_init__(self) -> None:
        score_fn(self.score)  # unknown names fail here, with the list of scores
        for name in ("iterations", "samples", "score_batches", "batch_size", "top"):
            if getattr(self, name) < 1:
                raise ConfigError(f"WeightlessConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.prior_lr <= 0 or self.sharpness <= 0:
            raise ConfigError("WeightlessConfig.prior_lr and sharpness must be > 0")


def score_architecture(
    space: Space,
    arch: Architecture,
    batches: Sequence[Batch],
    score: str,
    seed: int,
    shared: SharedInit | None = None,
) -> float:
    """The architecture's training-free score at initialisation: its own, seeded with `seed`, or
    assembled from `shared`'s operations (each initialised once, seeded by its key)."""
    if shared is None:
        set_seed(seed)
        return float(score_fn(score)(space.build(arch).model, batches))
    with shared_init(shared):
        model = space.build(arch).model
    return float(score_fn(score)(model, batches))


def rank_weights(scores: Sequence[float], sharpness: float) -> list[float]:
    s = torch.tensor(list(scores), dtype=torch.float64)
    if len(s) == 1:
        return [1.0]
    # Average ranks for ties, so equal scores get equal weight.
    ranks = torch.empty_like(s)
    order = torch.argsort(s)
    ranks[order] = torch.arange(len(s), dtype=torch.float64)
    for v in torch.unique(s):
        tie = s == v
        ranks[tie] = ranks[tie].mean()
    utility = ranks / (len(s) - 1) - 0.5
    return torch.softmax(sharpness * utility, dim=0).tolist()


def score_batches(
    data: DataBundle, n: int, batch_size: int, tokenizer: Any, seed: int
) -> list[Batch]:
    loader = data.loader("train", batch_size, shuffle=True, tokenizer=tokenizer, seed=seed)
    out: list[Batch] = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def compare_scores(
    space: Space,
    batches: Sequence[Batch],
    archs: Sequence[Architecture],
    accuracies: Sequence[float],
    scores: Sequence[str] = tuple(SCORES),
    seed: int = 0,
    shared: bool = True,
) -> dict[str, dict[str, Any]]:
    """Kendall tau of each score against trained accuracy over `archs` (with the raw scores),
    scored as `search` scores them (`shared`: from shared initialised operations)."""
    if len(archs) != len(accuracies) or len(archs) < 3:
        raise ConfigError(
            f"compare_scores needs >= 3 architectures with one accuracy each, got {len(archs)}/{len(accuracies)}"
        )
    out: dict[str, dict[str, Any]] = {}
    init = SharedInit(seed) if shared else None
    for name in scores:
        values = [score_architecture(space, a, batches, name, seed, init) for a in archs]
        out[name] = {"kendall_tau": kendall_tau(values, list(accuracies)), "scores": values}
    return out


def best_score(comparison: dict[str, dict[str, Any]]) -> str:
    """The score with the highest Kendall tau (nan ranks last)."""

    def key(name: str) -> float:
        tau = comparison[name]["kendall_tau"]
        return -2.0 if tau != tau else tau

    return max(comparison, key=key)


def search(
    space: Space,
    data: DataBundle,
    config: WeightlessConfig | None = None,
    *,
    tokenizer: Any = None,
    progress: Callable[[str], None] | None = None,
    ledger: SearchLedger | None = None,
) -> ParsecResult:
    """Run Weightless PARSEC on `space`: architectures scored at initialisation on a few
    training batches, the most probable retrained. ledger: as for `parsec.search`."""
    config = config or WeightlessConfig()
    ledger = ledger or SearchLedger()
    prior, gen = begin(space, data, config.warm_start, config.seed, tokenizer)
    cache: dict[str, float] = {}
    seen: dict[str, Architecture] = {}
    shared = SharedInit(config.seed) if config.shared_init else None
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    with ledger.window("weightless:search", unit="architecture") as search_fp:
        batches = score_batches(
            data, config.score_batches, config.batch_size, tokenizer, config.seed
        )
        for it in range(config.iterations):
            archs = [prior.sample(gen) for _ in range(config.samples)]
            values = []
            for arch in archs:
                key = arch_key(arch)
                if key not in cache:
                    cache[key] = score_architecture(
                        space, arch, batches, config.score, config.seed, shared
                    )
                    seen[key] = arch
                values.append(cache[key])
            weights = rank_weights(values, config.sharpness)
            prior.update(archs, weights, config.prior_lr)
            history.append(
                {
                    "iteration": it,
                    "mean_score": sum(values) / len(values),
                    "entropy_nats": prior.entropy_nats(),
                }
            )
            if progress and (it + 1) % max(1, config.iterations // 5) == 0:
                progress(
                    f"iteration {it + 1}/{config.iterations}: mean {config.score} {history[-1]['mean_score']:.3f}, "
                    f"pi entropy {history[-1]['entropy_nats']:.2f} nats, {time.perf_counter() - start:.1f} s"
                )
        search_fp.units = len(cache)
    candidates, retrain_fp = retrain_top(
        "weightless", space, prior, seen, data, config.top, config.retrain, tokenizer, progress,
        ledger,
    )
    return ParsecResult(
        method="weightless",
        space=space.name,
        prior=prior,
        candidates=candidates,
        search_footprint=search_fp,
        retrain_footprint=retrain_fp,
        history=history,
        settings=asdict(config),
        evaluated=len(cache),
        extra={"score": config.score},
    )
