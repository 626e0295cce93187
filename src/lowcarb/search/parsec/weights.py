"""The one-shot weight store: one set of weights per (decision, choice, position) key.

Only the sampled architecture's modules exist while it trains: its modules are built fresh, their
tensors copied in from the store (or, the first time a key is seen, copied out as its initial
value), one SGD-with-momentum step is taken, and the updated tensors go back into the store.
The momentum buffers live in the store with the weights, so a key keeps its optimiser state
across the architectures that share it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class WeightStore:
    def __init__(self) -> None:
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.momentum: dict[str, dict[str, torch.Tensor]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.state

    def __len__(self) -> int:
        return len(self.state)

    def numel(self) -> int:
        return sum(t.numel() for s in self.state.values() for t in s.values())

    def load_into(self, parts: Mapping[str, nn.Module]) -> None:
        """Give each module its key's stored weights (or store its fresh ones, first time)."""
        for key, module in parts.items():
            if key in self.state:
                module.load_state_dict(self.state[key])
            else:
                self.state[key] = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def save_from(self, parts: Mapping[str, nn.Module]) -> None:
        for key, module in parts.items():
            self.state[key] = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def sgd_step(
        self,
        parts: Mapping[str, nn.Module],
        lr: float,
        momentum: float,
        weight_decay: float,
        clip_norm: float | None = None,
    ) -> None:
        """SGD with momentum on the built modules' gradients, buffers kept per key. Gradients
        are clipped to `clip_norm` (total over the architecture): one-shot weights see a new
        architecture every step, and an unlucky one can blow them up."""
        if clip_norm is not None:
            params = [p for m in parts.values() for p in m.parameters() if p.grad is not None]
            if params:
                nn.utils.clip_grad_norm_(params, clip_norm)
        for key, module in parts.items():
            bufs = self.momentum.setdefault(key, {})
            for name, p in module.named_parameters():
                if p.grad is None:
                    continue
                g = p.grad + weight_decay * p
                buf = bufs.get(name)
                buf = g.clone() if buf is None else buf.mul_(momentum).add_(g)
                bufs[name] = buf
                p.sub_(lr * buf)
