"""Training-free architecture scores, computed at initialisation on a few batches.

- `naswot`: Mellor et al. 2021 ("Neural Architecture Search without Training"): the binary
  activation pattern c_i of each example (which ReLU/GELU inputs are > 0), the kernel
  K = C C^T + (1 - C)(1 - C)^T (the number of units on which two examples agree), score log|K|.
  Networks that separate inputs into distinct linear regions at init score higher.
- `synflow`: Tanaka et al. 2020: with |weights| and an all-ones input (token ids for text),
  R = sum of outputs, score = sum |theta * dR/dtheta| (log10 of it, float64, BN in eval mode).
- `gradnorm`: Abdelfattah et al. 2021: sum over parameters of ||d CE / d theta||_2 on a batch.

Every score is a pure function of the model and the batches: build the model under a fixed seed
and the score is deterministic.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from lowcarb.errors import ConfigError
from lowcarb.train import forward
from lowcarb.train.batches import logits_of, model_device, to_device

Batch = dict[str, torch.Tensor]


@torch.no_grad()
def naswot(model: nn.Module, batches: Sequence[Batch]) -> float:
    codes: list[torch.Tensor] = []

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        # float32 holds the agreement counts exactly (< 2^24 units) at half float64's cost.
        codes.append((inputs[0] > 0).flatten(1).to(torch.float32))  # (B, units)

    # Train-mode BN (batch statistics, as the network is at init) would move the running
    # statistics: keep a copy of the buffers and put them back, cheaper than copying the model.
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.ReLU, nn.GELU))
    ]
    device = model_device(model)
    try:
        with _mode(model, training=True):
            return sum(_naswot_batch(model, to_device(b, device), codes) for b in batches) / len(
                batches
            )
    finally:
        for h in handles:
            h.remove()
        named = dict(model.named_buffers())
        for name, value in buffers.items():
            named[name].copy_(value)


def _naswot_batch(model: nn.Module, batch: Batch, codes: list[torch.Tensor]) -> float:
    """log|K| of one batch; `codes` is filled by the activation hooks during the forward pass."""
    codes.clear()
    forward(model, batch)
    n = int(batch["labels"].shape[0])
    if not codes:  # no activation at all: every example looks the same
        return _logdet(torch.zeros((n, n), dtype=torch.float64))
    c = torch.cat(codes, dim=1)  # (B, all units)
    k = c @ c.T + (1 - c) @ (1 - c).T  # units on which two examples agree
    return _logdet(k.to(torch.float64))


def _logdet(k: torch.Tensor) -> float:
    sign, logabs = torch.linalg.slogdet(k)
    # A singular kernel (two examples with identical patterns) is the worst case; keep it finite
    # so that scores can be ranked and averaged: log|K + I| is within log 2 per example of log|K|
    # for a well-separated kernel and finite for a singular one.
    if sign <= 0 or not math.isfinite(float(logabs)):
        sign, logabs = torch.linalg.slogdet(
            k + torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
        )
    return float(logabs)


@contextlib.contextmanager
def _mode(model: nn.Module, training: bool, modules: list[nn.Module] | None = None) -> Iterator[None]:
    """Every module in `training` mode inside the block; each module's own flag back after it.
    modules: `list(model.modules())` when the caller already has it."""
    modules = list(model.modules()) if modules is None else modules
    # Only the modules whose flag differs are switched, and switched back. The flag is set with
    # object.__setattr__: nn.Module.__setattr__'s checks (is it a Parameter, a buffer, a module?)
    # run for every module twice per score and were a visible share of a score on the small
    # candidates of a search. A model with a module that overrides train() is switched through
    # model.train() (the override may set other flags), and every flag is put back afterwards.
    if any(type(m).train is not nn.Module.train for m in modules):
        restore = [(m, m.training) for m in modules]
        model.train(training)
    else:
        restore = [(m, not training) for m in modules if m.training != training]
        for m, _ in restore:
            object.__setattr__(m, "training", training)
    try:
        yield
    finally:
        for m, flag in restore:
            object.__setattr__(m, "training", flag)


def _all_ones_inputs(batch: Batch) -> Batch:
    """Synflow's input: the batch's first example with every float input set to 1.0 in float64
    (token ids and masks stay as they are); labels dropped."""
    inputs: Batch = {}
    for k, v in batch.items():
        if k == "labels":
            continue
        inputs[k] = torch.ones_like(v[:1], dtype=torch.float64) if v.is_floating_point() else v[:1]
    return inputs


def _unique(tensors: Iterable[torch.Tensor | None]) -> list[torch.Tensor]:
    """The tensors in order, each once (shared weights appear under several modules), Nones left out."""
    seen: set[int] = set()
    out = []
    for t in tensors:
        if t is not None and id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def synflow(model: nn.Module, batches: Sequence[Batch]) -> float:
    # |weights| in float64 go in by swapping each tensor's storage (`.data`) for the duration of
    # one forward and backward pass, and the originals go back in `finally`: the model is left as
    # it was, so score candidates one at a time. A float64 deep copy of the module was most of a
    # score's CPU time on the cell-CNN space, and torch.func.functional_call's per-call module
    # bookkeeping showed next in a profile. Weights made by forward pre-hooks
    # (torch.nn.utils.prune) or kept outside parameters and buffers are not swapped: such models
    # are not supported (nothing checks for them).
    # One walk of the module tree for parameters, buffers and the mode switch: each of
    # model.parameters(), .buffers() and .modules() walks it again, with a memo set, and the
    # three walks were about a tenth of a score's CPU time on the cell-CNN space. The walk
    # yields what parameters() and buffers() yield, in their order, each tensor once.
    modules = list(model.modules())
    params = _unique(t for m in modules for t in m._parameters.values())
    trained = [p for p in params if p.requires_grad]  # frozen weights do not count
    if not trained:
        raise ConfigError(
            "synflow needs at least one trainable parameter (all are frozen); unfreeze the "
            "weights to score, or use the naswot score, which needs no gradients"
        )
    buffers = [b for b in _unique(t for m in modules for t in m._buffers.values()) if b.is_floating_point()]
    originals = [t.data for t in params + buffers]
    inputs = _all_ones_inputs(to_device(batches[0], params[0].device if params else model_device(model)))
    try:
        for p in params:
            p.data = p.data.abs().double()
        for b in buffers:
            b.data = b.data.double()
        with _mode(model, training=False, modules=modules):  # BN: running statistics, a property of the weights
            out = model(**inputs)
        grads = torch.autograd.grad(logits_of(out).sum(), trained, allow_unused=True)
        with torch.no_grad():
            used = [(p, g) for p, g in zip(trained, grads, strict=True) if g is not None]
            # sum |theta * g| = theta . |g|, as every theta here is |weight| >= 0: one dot product
            # instead of a reduction (and a float()) per tensor.
            total = float(torch.dot(torch.cat([p.reshape(-1) for p, _ in used]),
                                    torch.cat([g.reshape(-1) for _, g in used]).abs_())) if used else 0.0
    finally:
        for t, original in zip(params + buffers, originals, strict=True):
            t.data = original
    return math.log10(total) if total > 0 else -300.0  # log scale: raw values span many decades


def gradnorm(model: nn.Module, batches: Sequence[Batch]) -> float:
    m = copy.deepcopy(model).train()  # gradients and BN statistics stay off the caller's model
    device = model_device(m)
    total = 0.0
    for batch in batches:
        batch = to_device(batch, device)
        m.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(forward(m, batch), batch["labels"])
        loss.backward()
        total += sum(float(p.grad.norm()) for p in m.parameters() if p.grad is not None)
    return total / len(batches)


SCORES: dict[str, Callable[[nn.Module, Sequence[Batch]], float]] = {
    "naswot": naswot,
    "synflow": synflow,
    "gradnorm": gradnorm,
}


def score_fn(name: str) -> Callable[[nn.Module, Sequence[Batch]], float]:
    try:
        return SCORES[name]
    except KeyError:
        raise ConfigError(
            f"unknown training-free score {name!r}; choose one of {sorted(SCORES)}"
        ) from None


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either ranking handled); nan when either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ConfigError(
            f"kendall_tau needs two equal-length sequences of >= 2 values, got {len(x)} and {len(y)}"
        )
    concordant = discordant = ties_x = ties_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else float("nan")
