"""Gradual unfreezing, top layers first (ULMFiT, used by every XtremeDistil stage).

The model's parameters are split into groups ordered from the output down:
  group 0: the head (everything outside the blocks and embeddings: pooler, classifier, final
           norm) together with the top block, so the first group always has a training signal;
  group 1..L-1: the next blocks downwards;
  last group: the embeddings.
`GradualUnfreezing(every_steps=k)` trains group 0 alone for k steps, then groups 0-1 for k steps,
and so on until everything trains.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lowcarb.compress.distill.capture import embedding_module, encoder_layers


def unfreezing_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names per group, top first (see the module docstring)."""
    blocks = encoder_layers(model)
    block_params = [{id(p) for p in block.parameters()} for block in blocks]
    in_blocks = set().union(*block_params)
    embeddings = embedding_module(model)
    if embeddings is not None:
        embedding_ids = {id(p) for p in embeddings.parameters()}
    else:
        embedding_ids = {
            id(p)
            for m in model.modules()
            if isinstance(m, nn.Embedding)
            for p in m.parameters()
        }
    embedding_ids -= in_blocks
    named = list(model.named_parameters())
    head = [n for n, p in named if id(p) not in in_blocks and id(p) not in embedding_ids]
    groups: list[list[str]] = []
    for index in range(len(blocks) - 1, -1, -1):
        names = [n for n, p in named if id(p) in block_params[index]]
        groups.append(head + names if index == len(blocks) - 1 else names)
    embedding_names = [n for n, p in named if id(p) in embedding_ids]
    if embedding_names:
        groups.append(embedding_names)
    return groups


def set_unfrozen(model: nn.Module, groups: list[list[str]], count: int) -> set[str]:
    """Make the first `count` groups trainable and freeze the rest; returns the trainable names."""
    if count < 1:
        raise ValueError(f"at least one group must train, got count={count}")
    trainable = {name for group in groups[:count] for name in group}
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    return trainable


@dataclass(frozen=True)
class GradualUnfreezing:
    """Unfreeze one more group every `every_steps` optimiser steps (0: everything trains)."""

    every_steps: int

    def __post_init__(self) -> None:
        if self.every_steps < 0:
            raise ValueError(f"every_steps must be >= 0, got {self.every_steps}")

    def groups_at(self, step: int, total_groups: int) -> int:
        """How many groups train after `step` optimiser steps."""
        if self.every_steps == 0:
            return total_groups
        return min(total_groups, 1 + step // self.every_steps)


class Unfreezer:
    """Applies a `GradualUnfreezing` schedule to a model; `on_step` plugs into `train.fit`.

    Parameters that were frozen before (for example a frozen base under LoRA) stay frozen, and
    `release()` restores every parameter's original `requires_grad`.
    """

    def __init__(self, model: nn.Module, schedule: GradualUnfreezing) -> None:
        self.model = model
        self.schedule = schedule
        self._initial = {name: p.requires_grad for name, p in model.named_parameters()}
        allowed = {name for name, trains in self._initial.items() if trains}
        self.groups = [[n for n in group if n in allowed] for group in unfreezing_groups(model)]
        self.trainable = set_unfrozen(model, self.groups, schedule.groups_at(0, len(self.groups)))

    def on_step(self, step: int, model: nn.Module) -> bool:
        count = self.schedule.groups_at(step, len(self.groups))
        self.trainable = set_unfrozen(model, self.groups, count)
        return False  # never stops training

    def release(self) -> None:
        """Every parameter back to the `requires_grad` it had before the schedule."""
        for name, p in self.model.named_parameters():
            p.requires_grad_(self._initial.get(name, True))
