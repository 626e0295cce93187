"""Training a causal LM: next-token loss on the labelled tokens, counted and measured per token.

    result = fit_causal_lm(model, bundle.loader("train", 8, shuffle=True, tokenizer=tok),
                           TrainConfig(max_steps=200, lr=2e-4, gradient_checkpointing=True))
    result.train_tokens, result.tokens_per_s, result.j_per_1k_tokens, result.peak_memory_bytes

The loss is the mean cross-entropy of predicting token t+1 from tokens <= t, over the positions
whose label is not -100 (the response tokens; lowcarb.data.lm_encode). Hugging Face causal LMs
compute logits only for the positions the loss needs (`logits_to_keep`): from the first response
token of the batch on. With a 49,152-token vocabulary the output layer is a fifth of SmolLM2's
forward pass, and the prompt positions would only be thrown away.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lowcarb.train.batches import Batch, logits_of, model_device, model_inputs
from lowcarb.train.config import TrainConfig
from lowcarb.train.loop import FitResult, OnStep, fit
from lowcarb.train.memory import PeakMemory, gradient_checkpointing

IGNORE_INDEX = -100


def _accepts(model: nn.Module, name: str) -> bool:
    """Whether `model(...)` takes the keyword `name`; a wrapper that passes **kwargs through to
    the model it wraps (PEFT's `get_base_model()`) takes what that model takes."""
    try:
        if name in inspect.signature(model.forward).parameters:
            return True
    except (TypeError, ValueError):
        return False
    base = getattr(model, "get_base_model", None)
    return callable(base) and base() is not model and _accepts(base(), name)


def shifted_logits_and_targets(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, V) logits and their (B, K) next-token targets, K spanning every labelled position."""
    labels = batch["labels"]
    width = labels.shape[1]
    labelled = (labels[:, 1:] != IGNORE_INDEX).any(0)
    # logits at position p predict the token at p + 1; keep p from the first labelled target on.
    first = int(labelled.nonzero()[0]) if bool(labelled.any()) else width - 1
    keep = width - first
    kwargs: dict[str, Any] = model_inputs(batch)
    if _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
    if _accepts(model, "use_cache"):
        kwargs["use_cache"] = False  # training and scoring never reuse keys and values
    logits = logits_of(model(**kwargs))[:, -keep:]  # models without logits_to_keep return all T
    return logits[:, :-1], labels[:, first + 1 :]


def next_token_logits(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T-1, V) logits at every position, their (B, T-1) next-token targets (IGNORE_INDEX
    outside the responses) and where the next token is a real one (not padding): what a loss
    over the prompt tokens too reads, where shifted_logits_and_targets keeps only the responses."""
    kwargs: dict[str, Any] = model_inputs(batch)
    if _accepts(model, "use_cache"):
        kwargs["use_cache"] = False
    logits = logits_of(model(**kwargs))[:, :-1]
    targets = batch["labels"][:, 1:]
    mask = batch.get("attention_mask")
    real = mask[:, 1:].bool() if mask is not None else torch.ones_like(targets, dtype=torch.bool)
    return logits, targets, real


def causal_lm_loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy over labelled tokens; `fit(loss_fn=...)` shape."""
    logits, targets = shifted_logits_and_targets(model, batch)
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    return loss, logits


def token_nll_sum(model: nn.Module, batch: Batch) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of the labelled tokens, and how many there are."""
    logits, targets = shifted_logits_and_targets(model, batch)
    nll = F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return float(nll.detach()), int((targets != IGNORE_INDEX).sum())


class CountingLoader:
    """Wraps a loader and counts what the batches it hands out hold (fit processes every one)."""

    def __init__(self, loader: Iterable[Batch]) -> None:
        self.loader = loader
        self.tokens = 0  # non-padding tokens the model read
        self.target_tokens = 0  # tokens with a loss
        self.batches = 0

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            self.tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            self.target_tokens += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            self.batches += 1
            yield batch


@dataclass
class LMTrainResult:
    """What training a causal LM did and cost, per token."""

    fit: FitResult
    train_tokens: int
    target_tokens: int
    duration_s: float
    peak_memory_bytes: int
    start_memory_bytes: int
    peak_memory_method: str
    energy_j: float
    footprint: dict[str, Any]
    gradient_checkpointing: bool

    @property
    def tokens_per_s(self) -> float:
        return self.train_tokens / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def j_per_1k_tokens(self) -> float | None:
        return 1000.0 * self.energy_j / self.train_tokens if self.train_tokens else None

    def to_dict(self) -> dict[str, Any]:
        """Flat, JSON-able: the fit result's fields (no history) plus the per-token figures."""
        out = {k: v for k, v in asdict(self.fit).items() if k != "history"}
        out.update(
            train_tokens=self.train_tokens,
            target_tokens=self.target_tokens,
            tokens_per_s=self.tokens_per_s,
            train_energy_j=self.energy_j,
            j_per_1k_train_tokens=self.j_per_1k_tokens,
            peak_memory_bytes=self.peak_memory_bytes,
            start_memory_bytes=self.start_memory_bytes,
            peak_memory_method=self.peak_memory_method,
            gradient_checkpointing=self.gradient_checkpointing,
            energy_method="; ".join(
                f"{name}: {c['method']}" for name, c in (self.footprint.get("components") or {}).items()
            ),
        )
        return out


def fit_causal_lm(
    model: nn.Module,
    train_loader: Iterable[Batch],
    config: TrainConfig,
    *,
    carbon_config: Any | None = None,
    on_step: OnStep | None = None,
    name: str = "fine-tune",
) -> LMTrainResult:
    """Train in place with `causal_lm_loss`, inside a ledger window counted in tokens.

    The window (`lowcarb.measure.track(name, unit="token")`) nests inside any open one (a run's
    stage), so its energy per token lands in the ledger next to the stage's total.
    """
    from lowcarb.measure import track  # train must not need the ledger to import

    counter = CountingLoader(train_loader)
    kwargs: dict[str, Any] = {"unit": "token"}
    if carbon_config is not None:
        kwargs["config"] = carbon_config
    with (
        gradient_checkpointing(model, config.gradient_checkpointing),
        PeakMemory(model_device(model)) as peak,
        track(name, **kwargs) as fp,
    ):
        start = time.perf_counter()
        result = fit(model, counter, None, config, loss_fn=causal_lm_loss, on_step=on_step)
        duration = time.perf_counter() - start
        fp.units = counter.tokens
    return LMTrainResult(
        fit=result,
        train_tokens=counter.tokens,
        target_tokens=counter.target_tokens,
        duration_s=duration,
        peak_memory_bytes=peak.peak_bytes,
        start_memory_bytes=peak.start_bytes,
        peak_memory_method=peak.method,
        energy_j=fp.energy_j,
        footprint=fp.to_dict(),
        gradient_checkpointing=config.gradient_checkpointing,
    )
