"""EarlyBERT / early-bird tickets: find the structure to keep early in training, then remove the rest.

After Chen et al., "EarlyBERT" (ACL 2021) and You et al., "Drawing Early-Bird Tickets" (ICLR 2020).

    ticket = search(model, train_loader, EarlyBirdConfig(), TrainConfig(lr=5e-5))  # model untouched
    summary = apply(model, ticket)      # heads / neurons / channels physically removed
    fit(model, ...)                     # train the pruned network from the pretrained weights

or, without rewinding, prune the searched weights and train them for the steps left:

    ticket, searched = search_keeping_weights(model, train_loader, config, train_config)
    apply(searched, ticket)
    fit(searched, ..., dataclasses.replace(train_config, max_steps=budget - ticket.stop_step))
                                        # (nothing to train when the search used the budget)

Search: a copy of the model trains on the task with an L1 penalty on importance coefficients (one
per attention head and per FFN neuron for BERT-like encoders, initialised to 1 and hooked into the
forward pass; the BatchNorm scales for CNNs). Every `mask_every_steps` steps the pruning mask is
drawn from the coefficient magnitudes (heads per layer at `head_prune_ratio`, FFN neurons globally
at `ffn_prune_ratio`, CNN channels globally at `channel_prune_ratio`). The reference code drew the
ticket at a fixed step; here the search stops by itself once the last `window` masks differ from
one another by less than `distance_threshold` (normalised Hamming distance between consecutive
masks), or at `max_search_steps`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sized
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from lowcarb.errors import ConfigError, DataError, ModelError
from lowcarb.models.surgery import count_parameters
from lowcarb.models.transforms import TransformSummary, record, register_transform
from lowcarb.prune import bert_structure, bn_channels
from lowcarb.train.config import TrainConfig
from lowcarb.train.loop import fit

Mask = dict[str, torch.Tensor]


@dataclass(frozen=True)
class EarlyBirdConfig:
    head_prune_ratio: float = 1 / 3
    ffn_prune_ratio: float = 0.4
    channel_prune_ratio: float = 0.5
    l1_coef: float = 1e-4
    mask_every_steps: int = 10
    distance_threshold: float = 0.1
    window: int = 5
    max_search_steps: int = 1000

    def __post_init__(self) -> None:
        for name in ("head_prune_ratio", "ffn_prune_ratio", "channel_prune_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"earlybird.{name} must be in [0, 1), got {value}")
        if self.l1_coef < 0:
            raise ConfigError(f"earlybird.l1_coef must be >= 0, got {self.l1_coef}")
        if self.mask_every_steps < 1:
            raise ConfigError(f"earlybird.mask_every_steps must be >= 1, got {self.mask_every_steps}")
        if not 0.0 < self.distance_threshold <= 1.0:
            raise ConfigError(f"earlybird.distance_threshold must be in (0, 1], got "
                             f"{self.distance_threshold}")
        if self.window < 2:
            raise ConfigError(f"earlybird.window must be >= 2 (it compares consecutive masks), got "
                             f"{self.window}")
        if self.max_search_steps < self.mask_every_steps:
            raise ConfigError(f"earlybird.max_search_steps ({self.max_search_steps}) must be >= "
                             f"mask_every_steps ({self.mask_every_steps})")


def mask_distance(a: Mask, b: Mask) -> float:
    """Normalised Hamming distance: the fraction of entries that differ, per mask group.

    With several groups (BERT: "heads" and "ffn") the largest group distance is returned, so the
    72 head entries are not drowned out by thousands of neuron entries.
    """
    if set(a) != set(b):
        raise ValueError(f"masks have different groups: {sorted(a)} vs {sorted(b)}")
    worst = 0.0
    for key in a:
        if a[key].shape != b[key].shape:
            raise ValueError(f"mask group {key!r} has shapes {tuple(a[key].shape)} and "
                             f"{tuple(b[key].shape)}")
        worst = max(worst, (a[key] != b[key]).float().mean().item())
    return worst


class StopRule:
    """The early-bird stop: the last `window` masks all within `threshold` of their predecessor."""

    def __init__(self, threshold: float, window: int) -> None:
        self.threshold = threshold
        self.window = window
        self.distances: list[float] = []
        self.count = 0
        self.last: Mask | None = None

    def add(self, mask: Mask) -> bool:
        """Record the next mask; True when the search should stop."""
        if self.last is not None:
            self.distances.append(mask_distance(self.last, mask))
        self.last = {k: v.clone() for k, v in mask.items()}
        self.count += 1
        recent = self.distances[-(self.window - 1):]
        return self.count >= self.window and all(d < self.threshold for d in recent)


class _Structure(Protocol):
    def attach(self, model: nn.Module) -> None: ...
    def detach(self, model: nn.Module) -> None: ...
    def l1(self, model: nn.Module) -> torch.Tensor: ...
    def fold(self, model: nn.Module) -> None: ...
    def masks(self, model: nn.Module, config: EarlyBirdConfig) -> Mask: ...
    def prune(self, model: nn.Module, mask: Mask) -> list[str]: ...


class _Heads:
    """BERT-like encoders: attention heads and FFN neurons."""

    def attach(self, model: nn.Module) -> None:
        bert_structure.attach(model)

    def detach(self, model: nn.Module) -> None:
        bert_structure.detach(model)

    def l1(self, model: nn.Module) -> torch.Tensor:
        return bert_structure.coefficients(model).l1()

    def fold(self, model: nn.Module) -> None:
        bert_structure.fold(model)

    def masks(self, model: nn.Module, config: EarlyBirdConfig) -> Mask:
        return bert_structure.masks(model, config.head_prune_ratio, config.ffn_prune_ratio)

    def prune(self, model: nn.Module, mask: Mask) -> list[str]:
        return bert_structure.prune(model, mask)


class _Channels:
    """CNNs: conv channels ranked by their BatchNorm scale."""

    def attach(self, model: nn.Module) -> None:
        bn_channels.channel_groups(model)  # fail before training if the model cannot be pruned

    def detach(self, model: nn.Module) -> None:
        # Nothing was added: the BatchNorm scales are the model's own parameters.
        return None

    def l1(self, model: nn.Module) -> torch.Tensor:
        return bn_channels.l1(model)

    def fold(self, model: nn.Module) -> None:
        # The BatchNorm scales are the model's own weights: there is nothing to multiply in.
        return None

    def masks(self, model: nn.Module, config: EarlyBirdConfig) -> Mask:
        return bn_channels.masks(model, config.channel_prune_ratio)

    def prune(self, model: nn.Module, mask: Mask) -> list[str]:
        return bn_channels.prune(model, mask)


def structure_for(model: nn.Module) -> _Structure:
    if bert_structure.is_bert_like(model):
        return _Heads()
    if bn_channels.has_bn_channels(model):
        return _Channels()
    raise ModelError(f"{type(model).__name__} has neither BERT-like layers nor BatchNorm2d "
                     "channels; early-bird pruning supports BERT-style encoders and CNNs with BN")


@dataclass(frozen=True, eq=False)
class EarlyBirdTicket:
    """The drawn structure (keep-masks) and how the search went. Tickets are equal when their
    masks and search record are (masks compared as tensors)."""

    masks: Mask
    stop_step: int
    stopped_early: bool  # True: the early-bird rule fired; False: max_search_steps was reached
    steps_per_epoch: int
    mask_steps: tuple[int, ...] = ()
    distances: tuple[float, ...] = ()
    search_loss: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def stop_fraction_of_epoch(self) -> float:
        return self.stop_step / self.steps_per_epoch

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EarlyBirdTicket):
            return NotImplemented
        same_masks = set(self.masks) == set(other.masks) and all(
            torch.equal(v, other.masks[k]) for k, v in self.masks.items()
        )
        fields = ("stop_step", "stopped_early", "steps_per_epoch", "mask_steps", "distances", "config")
        return same_masks and all(getattr(self, f) == getattr(other, f) for f in fields)

    __hash__ = None  # type: ignore[assignment]  # masks are tensors: tickets are not hashable

    def kept(self) -> dict[str, int]:
        return {k: int(v.sum()) for k, v in self.masks.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "stop_step": self.stop_step,
            "stopped_early": self.stopped_early,
            "stop_fraction_of_epoch": self.stop_fraction_of_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "mask_steps": list(self.mask_steps),
            "distances": [round(d, 5) for d in self.distances],
            "search_loss": self.search_loss,
            "kept": self.kept(),
            "total": {k: int(v.numel()) for k, v in self.masks.items()},
            "config": self.config,
        }


def search(
    model: nn.Module,
    train_loader: Iterable[Any],
    config: EarlyBirdConfig,
    train_config: TrainConfig,
) -> EarlyBirdTicket:
    """Run the early-bird search on a copy of `model` (which stays as it was) and draw the ticket."""
    return _search(model, train_loader, config, train_config)[0]


def search_keeping_weights(
    model: nn.Module,
    train_loader: Iterable[Any],
    config: EarlyBirdConfig,
    train_config: TrainConfig,
) -> tuple[EarlyBirdTicket, nn.Module]:
    """As `search`, and also return the copy the search trained, its coefficients multiplied into
    its weights (a plain model again, not yet pruned): to prune and train on without rewinding.
    `model` stays as it was."""
    ticket, work, structure = _search(model, train_loader, config, train_config)
    structure.fold(work)
    return ticket, work


def _search(
    model: nn.Module,
    train_loader: Iterable[Any],
    config: EarlyBirdConfig,
    train_config: TrainConfig,
) -> tuple[EarlyBirdTicket, nn.Module, _Structure]:
    structure = structure_for(model)
    steps_per_epoch = len(train_loader) if isinstance(train_loader, Sized) else 0
    if not steps_per_epoch:
        raise DataError("early-bird search needs a sized train loader with batches (a DataLoader "
                        "or a list); check the training split is not empty")
    # Copy first, then hook: hooks registered before a deepcopy would still point at the original.
    work = copy.deepcopy(model)
    structure.attach(work)
    rule = StopRule(config.distance_threshold, config.window)
    mask_steps: list[int] = []
    stop = {"step": 0, "early": False}

    # The search runs on the learning-rate schedule of the training it is the start of
    # (`train_config`), cut at max_search_steps by on_step. Squeezing the schedule into the search
    # would decay the rate to 0 at the bound and freeze the masks: a stop the data did not earn.
    horizon = train_config.epochs * steps_per_epoch
    if train_config.max_steps is not None:
        horizon = min(horizon, train_config.max_steps)
    max_steps = min(config.max_search_steps, horizon)

    def on_step(step: int, m: nn.Module) -> bool:
        stop["step"] = step
        if step % config.mask_every_steps == 0:
            mask_steps.append(step)
            stop["early"] = rule.add(structure.masks(m, config))
            if stop["early"]:
                return True
        return step >= max_steps

    search_config = dataclasses.replace(train_config, early_stopping_patience=None)
    result = fit(work, train_loader, None, search_config,
                 extra_loss=lambda m: config.l1_coef * structure.l1(m), on_step=on_step)
    # The ticket is the latest mask: at the stop it is the converged one; at max length, the
    # mask of the last step (drawn now if the last step was not a mask step).
    final = structure.masks(work, config) if not stop["early"] else rule.last
    assert final is not None
    ticket = EarlyBirdTicket(
        masks={k: v.clone() for k, v in final.items()},
        stop_step=result.steps,
        stopped_early=bool(stop["early"]),
        steps_per_epoch=steps_per_epoch,
        mask_steps=tuple(mask_steps),
        distances=tuple(rule.distances),
        search_loss=result.train_loss,
        config=dataclasses.asdict(config),
    )
    return ticket, work, structure


def apply(model: nn.Module, ticket: EarlyBirdTicket) -> TransformSummary:
    """Physically remove what the ticket prunes from `model` (normally the pretrained weights).

    Details: ``kept`` and ``total`` per mask group (heads, ffn, or channels).
    """
    structure = structure_for(model)
    before = count_parameters(model)
    changed = structure.prune(model, ticket.masks)
    record(model, ticket, {"widths": describe_structure(model)})
    details = {"kept": ticket.kept(), "total": {k: int(v.numel()) for k, v in ticket.masks.items()}}
    return TransformSummary(
        "earlybird", ticket, before, count_parameters(model), changed, details, model=model
    )


def describe_structure(model: nn.Module) -> dict[str, Any]:
    """The pruned widths of `model` as JSON (per-layer head counts and FFN sizes for BERT-like
    encoders, per-BN channel counts for CNNs), for `restore_structure` on a fresh model."""
    if bert_structure.is_bert_like(model):
        return {"kind": "bert", **bert_structure.describe(model)}
    if bn_channels.has_bn_channels(model):
        return {"kind": "bn_channels", **bn_channels.describe(model)}
    raise ModelError(f"{type(model).__name__} has neither BERT-like layers nor BatchNorm2d channels")


def restore_structure(model: nn.Module, description: dict[str, Any]) -> list[str]:
    """Remove from a freshly built model what `describe_structure` says was pruned (shapes only;
    load the saved weights afterwards)."""
    kind = description.get("kind")
    if kind == "bert":
        return bert_structure.restore(model, description)
    if kind == "bn_channels":
        return bn_channels.restore(model, description)
    raise ModelError(f"unknown pruned-structure kind {kind!r} (expected 'bert' or 'bn_channels')")


def _ticket_to_json(ticket: EarlyBirdTicket) -> dict[str, Any]:
    # The masks are the config: kept as 0/1 lists (a few thousand entries for MiniLM).
    out = {k: v for k, v in dataclasses.asdict(ticket).items() if k != "masks"}
    out["masks"] = {k: v.to(torch.uint8).tolist() for k, v in ticket.masks.items()}
    out["mask_steps"], out["distances"] = list(ticket.mask_steps), list(ticket.distances)
    return out


def _ticket_from_json(data: dict[str, Any]) -> EarlyBirdTicket:
    values = dict(data)
    values["masks"] = {k: torch.tensor(v, dtype=torch.bool) for k, v in data["masks"].items()}
    values["mask_steps"] = tuple(data.get("mask_steps", ()))
    values["distances"] = tuple(data.get("distances", ()))
    return EarlyBirdTicket(**values)


register_transform(
    EarlyBirdTicket, "earlybird",
    lambda model, _ticket, structure: (restore_structure(model, structure["widths"]), model)[1],
    to_json=_ticket_to_json, from_json=_ticket_from_json,
)  # fmt: skip
