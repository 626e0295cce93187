"""CNN channels ranked by BatchNorm scale (network slimming, as in You et al.'s early-bird tickets).

Every `Conv2d -> BatchNorm2d` pair is a prunable group; |gamma| is the channel's importance and the
L1 penalty acts on gamma directly (no extra coefficients). Physical removal follows the data flow
with torch.fx: the producing conv loses output channels, the BatchNorm loses entries, and the
consumer (the next Conv2d, or a Linear behind a Flatten) loses the matching inputs. Element-wise
activations, dropout and pooling pass channels through unchanged; anything else (a residual add,
a concat) is refused with an error rather than pruned wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from lowcarb.errors import ConfigError, ModelError
from lowcarb.models.surgery import conv_geometry

_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Dropout,
                 nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Identity)
_PASS_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.gelu,
                   torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d,
                   torch.nn.functional.dropout, torch.sigmoid, torch.tanh}
_PASS_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}


@dataclass(frozen=True)
class ChannelGroup:
    """One prunable group: conv -> bn -> ... -> consumer (a Conv2d, or a Linear after Flatten)."""

    conv: str
    bn: str
    consumer: str
    consumer_is_linear: bool


def bn_layers(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


def has_bn_channels(model: nn.Module) -> bool:
    return bool(bn_layers(model))


def _module(modules: dict[str, nn.Module], node: fx.Node) -> nn.Module | None:
    return modules.get(str(node.target)) if node.op == "call_module" else None


def _passes_through(modules: dict[str, nn.Module], node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _PASS_MODULES)
    if node.op == "call_function":
        return node.target in _PASS_FUNCTIONS
    return node.op == "call_method" and node.target in _PASS_METHODS


def _is_flatten(modules: dict[str, nn.Module], node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], nn.Flatten)
    return (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten")


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """Trace `model` and find every conv -> BN -> consumer chain that can lose channels."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types for untraceable control flow
        raise ModelError(f"cannot trace {type(model).__name__} with torch.fx ({exc}); BN-channel "
                         "pruning needs a model without data-dependent control flow") from exc
    modules = dict(model.named_modules())
    groups = []
    for node in graph.nodes:
        bn = _module(modules, node)
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        if not bn.affine:
            raise ModelError(f"BatchNorm {node.target} has affine=False: no scale to rank "
                             "channels by; use BatchNorm2d(..., affine=True)")
        src = node.args[0]
        conv = _module(modules, src) if isinstance(src, fx.Node) else None
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or len(src.users) != 1:
            raise ModelError(f"BatchNorm {node.target} does not directly follow a plain Conv2d used "
                             "only by it; BN-channel pruning needs conv -> BN chains")
        consumers, frontier, seen = [], list(node.users), set()
        while frontier:
            user = frontier.pop()
            if user in seen:
                continue
            seen.add(user)
            mod = _module(modules, user)
            if isinstance(mod, nn.Conv2d) and mod.groups == 1:
                consumers.append((str(user.target), False))
            elif _is_flatten(modules, user):
                after = list(user.users)
                lin = _module(modules, after[0]) if len(after) == 1 else None
                if not isinstance(lin, nn.Linear):
                    raise ModelError(f"after BN {node.target}, Flatten feeds {after}; channel "
                                     "pruning needs Flatten -> Linear")
                consumers.append((str(after[0].target), True))
            elif _passes_through(modules, user):
                frontier.extend(user.users)
            else:
                raise ModelError(f"BN {node.target} channels flow into {user.op} {user.target}, "
                                 "which channel pruning cannot follow (residual add, concat, ...)")
        if len(consumers) != 1:
            raise ModelError(f"BN {node.target} feeds {len(consumers)} consumers; channel pruning "
                             "needs exactly one")
        groups.append(ChannelGroup(str(src.target), str(node.target), *consumers[0]))
    if not groups:
        raise ModelError(f"{type(model).__name__} has no Conv2d -> BatchNorm2d chains to prune")
    return groups


def l1(model: nn.Module) -> torch.Tensor:
    return sum(bn.weight.abs().sum() for bn in bn_layers(model).values())  # type: ignore[return-value]


def masks(model: nn.Module, ratio: float) -> dict[str, torch.Tensor]:
    """{"channels": keep-mask over all BN channels, in bn_layers order}: global |gamma| ranking.

    `round(total * ratio)` channels are pruned; each layer keeps at least one.
    """
    layers = list(bn_layers(model).values())
    with torch.no_grad():
        scores = [bn.weight.detach().abs().cpu().clone() for bn in layers]
    for s in scores:
        s[s.argmax()] = float("inf")
    flat = torch.cat(scores)
    n_prune = min(round(flat.numel() * ratio), flat.numel() - len(layers))
    keep = torch.ones_like(flat, dtype=torch.bool)
    if n_prune > 0:
        keep[torch.argsort(flat, stable=True)[:n_prune]] = False
    return {"channels": keep}


def _split(model: nn.Module, mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    layers = bn_layers(model)
    channels = mask.get("channels")
    total = sum(bn.num_features for bn in layers.values())
    if channels is None or channels.numel() != total:
        got = None if channels is None else channels.numel()
        raise ConfigError(f"a CNN ticket needs a 'channels' mask over {total} BN channels, got {got};"
                         " was the ticket drawn on another model, or is this one already pruned?")
    out, start = {}, 0
    for name, bn in layers.items():
        out[name] = channels[start:start + bn.num_features]
        start += bn.num_features
    return out


def apply_masks(model: nn.Module, mask: dict[str, torch.Tensor]) -> None:
    """Zero gamma and beta of pruned channels: the masked model that physical removal must equal."""
    layers = bn_layers(model)
    with torch.no_grad():
        for name, keep in _split(model, mask).items():
            layers[name].weight[~keep] = 0.0
            layers[name].bias[~keep] = 0.0


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _conv_like(conv: nn.Conv2d, in_idx: torch.Tensor | None, out_idx: torch.Tensor | None):
    w = conv.weight.detach()
    if out_idx is not None:
        w = w.index_select(0, out_idx)
    if in_idx is not None:
        w = w.index_select(1, in_idx)
    new = nn.Conv2d(w.shape[1], w.shape[0], bias=conv.bias is not None,
                    padding_mode=conv.padding_mode, device=w.device, dtype=w.dtype,
                    **conv_geometry(conv))
    with torch.no_grad():
        new.weight.copy_(w)
        if conv.bias is not None and new.bias is not None:
            b = conv.bias.detach()
            new.bias.copy_(b.index_select(0, out_idx) if out_idx is not None else b)
    return new


def prune(model: nn.Module, mask: dict[str, torch.Tensor]) -> list[str]:
    """Physically remove the channels whose mask is False; returns the changed module names."""
    groups = channel_groups(model)
    per_bn = _split(model, mask)
    changed: list[str] = []
    # Compute every replacement from the unpruned model first: a conv can be both a consumer
    # (losing inputs) and a producer (losing outputs).
    out_keep = {g.conv: torch.nonzero(per_bn[g.bn]).flatten() for g in groups}
    in_keep = {g.consumer: (torch.nonzero(per_bn[g.bn]).flatten(), g) for g in groups}
    modules = dict(model.named_modules())
    for name in list(dict.fromkeys([*out_keep, *in_keep])):
        old = modules[name]
        if isinstance(old, nn.Conv2d):
            in_idx = in_keep[name][0] if name in in_keep else None
            new = _conv_like(old, in_idx, out_keep.get(name))
        else:  # a Linear behind Flatten: its inputs are channel-major blocks of H*W features
            keep, group = in_keep[name]
            n_ch = modules[group.bn].num_features
            if old.in_features % n_ch:
                raise ModelError(f"{name} has {old.in_features} inputs, not a multiple of the "
                                 f"{n_ch} channels of {group.bn}")
            spatial = old.in_features // n_ch
            idx = (keep[:, None] * spatial + torch.arange(spatial)[None, :]).flatten()
            w = old.weight.detach().index_select(1, idx)
            new = nn.Linear(w.shape[1], w.shape[0], bias=old.bias is not None, device=w.device,
                            dtype=w.dtype)
            with torch.no_grad():
                new.weight.copy_(w)
                if old.bias is not None and new.bias is not None:
                    new.bias.copy_(old.bias.detach())
        new.train(old.training)
        _set(model, name, new)
        changed.append(name)
    for g in groups:
        old_bn = modules[g.bn]
        assert isinstance(old_bn, nn.BatchNorm2d)  # channel_groups pairs convs with BatchNorm2d
        keep = out_keep[g.conv]
        bn = nn.BatchNorm2d(len(keep), eps=old_bn.eps, momentum=old_bn.momentum,
                            affine=old_bn.affine, track_running_stats=old_bn.track_running_stats,
                            device=old_bn.weight.device, dtype=old_bn.weight.dtype)
        with torch.no_grad():
            if old_bn.affine:
                bn.weight.copy_(old_bn.weight[keep])
                bn.bias.copy_(old_bn.bias[keep])
            if old_bn.track_running_stats:
                # get_buffer: torch types these buffers Optional, present whenever tracked.
                for stat in ("running_mean", "running_var"):
                    bn.get_buffer(stat).copy_(old_bn.get_buffer(stat)[keep])
                bn.get_buffer("num_batches_tracked").copy_(
                    old_bn.get_buffer("num_batches_tracked"))
        bn.train(old_bn.training)  # a fresh module would be in training mode (batch statistics)
        _set(model, g.bn, bn)
        changed.append(g.bn)
    return changed


def describe(model: nn.Module) -> dict[str, dict[str, int]]:
    """{"channels": {bn name: channel count}}: what `restore` needs to rebuild a pruned CNN."""
    layers = bn_layers(model)
    if not layers:
        raise ModelError(f"{type(model).__name__} has no BatchNorm2d layers to describe")
    return {"channels": {name: int(bn.num_features) for name, bn in layers.items()}}


def restore(model: nn.Module, description: dict[str, dict[str, int]]) -> list[str]:
    """Give a freshly built (unpruned) CNN the channel counts `describe` recorded (shapes only: the
    first channels of every layer are kept; the saved weights overwrite them)."""
    try:
        counts = {str(k): int(v) for k, v in description["channels"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"not a pruned-CNN description ({exc}); it comes from "
                         "bn_channels.describe") from exc
    layers = bn_layers(model)
    if set(counts) != set(layers):
        raise ModelError(f"described BatchNorm layers {sorted(counts)} differ from the model's "
                         f"{sorted(layers)}; was it built like the pruned one?")
    parts = []
    for name, bn in layers.items():
        if not 0 < counts[name] <= bn.num_features:
            raise ModelError(f"{name}: {counts[name]} channels described, the model has "
                             f"{bn.num_features}")
        parts.append(torch.arange(bn.num_features) < counts[name])
    return prune(model, {"channels": torch.cat(parts)})
