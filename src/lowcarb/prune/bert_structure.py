"""BERT heads and FFN neurons: learnable coefficients, masks, and physical removal.

Works on any encoder whose layers look like Hugging Face BERT's (`attention.self.query/key/value`,
`attention.output.dense`, `intermediate.dense`, `output.dense`): BERT, MiniLM, RoBERTa, ...

transformers 5.x no longer has `prune_heads`, so removal is done here: the kept heads' rows of
query/key/value and columns of attention.output.dense, and the kept neurons' rows of
intermediate.dense and columns of output.dense, are copied into smaller nn.Linear layers. BERT's
attention reshapes with `view(..., -1, head_size)`, so fewer heads need no other change.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lowcarb.errors import ConfigError, ModelError

COEFFICIENTS_ATTR = "earlybird_coefficients"

# A Hugging Face BERT-style layer, recognised by its attributes (find_layers), whatever its class.
# Its submodules are reached through nn.Module.__getattr__, which torch types `Tensor | Module`,
# so the layer is duck-typed: every attribute used here is checked by find_layers or its tests.
BertLayer = Any


def find_layers(model: nn.Module) -> list[BertLayer]:
    """The transformer layers of a BERT-like model, in order."""
    layers = []
    for module in model.modules():
        att = getattr(module, "attention", None)
        if (
            att is not None
            and hasattr(att, "self")
            and hasattr(att.self, "query")
            and hasattr(att, "output")
            and hasattr(module, "intermediate")
            and hasattr(module, "output")
        ):
            layers.append(module)
    return layers


def is_bert_like(model: nn.Module) -> bool:
    return bool(find_layers(model))


def _head_size(layer: BertLayer) -> int:
    return int(layer.attention.self.attention_head_size)


def _num_heads(layer: BertLayer) -> int:
    return int(layer.attention.self.query.out_features) // _head_size(layer)


class BertCoefficients(nn.Module):
    """One coefficient per head and per FFN neuron of every layer, initialised to 1.

    1-D parameters per layer (not an L x H matrix) so that the training loop's default groups
    leave them out of weight decay: the L1 penalty is the only force on them.
    """

    def __init__(self, layers: list[BertLayer]) -> None:
        super().__init__()
        self.heads = nn.ParameterList([nn.Parameter(torch.ones(_num_heads(la))) for la in layers])
        self.neurons = nn.ParameterList(
            [nn.Parameter(torch.ones(la.intermediate.dense.out_features)) for la in layers]
        )
        self._handles: list[RemovableHandle] = []

    def l1(self) -> torch.Tensor:
        return sum(p.abs().sum() for p in self.parameters())  # type: ignore[return-value]


def attach(model: nn.Module) -> BertCoefficients:
    """Add the coefficients to `model` (as a submodule, so they train with it) and hook them in."""
    if hasattr(model, COEFFICIENTS_ATTR):
        raise ModelError("model already has early-bird coefficients; call detach(model) first")
    layers = find_layers(model)
    if not layers:
        raise ModelError(f"{type(model).__name__} has no BERT-like layers (attention.self.query, "
                         "intermediate, output); EarlyBERT needs a BERT-style encoder")
    coefs = BertCoefficients(layers)
    device = layers[0].attention.self.query.weight.device
    coefs.to(device)
    for i, layer in enumerate(layers):
        d = _head_size(layer)

        def scale_heads(_mod, args, i=i, d=d):
            # attention.output.dense input: (B, T, H*d), the heads' outputs side by side.
            (x,) = args
            c = coefs.heads[i]
            return (x.unflatten(-1, (-1, d)) * c[:, None]).flatten(-2).to(x.dtype)

        def scale_neurons(_mod, _args, out, i=i):
            return out * coefs.neurons[i]

        coefs._handles.append(layer.attention.output.dense.register_forward_pre_hook(scale_heads))
        coefs._handles.append(layer.intermediate.register_forward_hook(scale_neurons))
    model.add_module(COEFFICIENTS_ATTR, coefs)
    return coefs


def coefficients(model: nn.Module) -> BertCoefficients:
    coefs = getattr(model, COEFFICIENTS_ATTR, None)
    if coefs is None:
        raise ModelError("model has no early-bird coefficients; call attach(model) first")
    return coefs


def detach(model: nn.Module) -> None:
    """Remove the hooks and the coefficient submodule (the model is plain again)."""
    coefs = coefficients(model)
    for handle in coefs._handles:
        handle.remove()
    delattr(model, COEFFICIENTS_ATTR)


def fold(model: nn.Module) -> None:
    """Multiply the coefficients into the weights they scale, then detach them: the plain model
    computes what the hooked one did (the searched weights, ready to be pruned and trained on).

    A head's coefficient scales its slice of attention.output.dense's input, so it scales those
    columns of the weight; a neuron's scales the activation output.dense reads, so its column.
    """
    coefs = coefficients(model)
    with torch.no_grad():
        for i, layer in enumerate(find_layers(model)):
            d = _head_size(layer)
            heads = coefs.heads[i].detach().to(layer.attention.output.dense.weight.dtype)
            dense = layer.attention.output.dense.weight
            dense.mul_(heads.repeat_interleave(d)[None, :].to(dense.device))
            out = layer.output.dense.weight
            out.mul_(coefs.neurons[i].detach().to(out.dtype).to(out.device)[None, :])
    detach(model)


def _smallest(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Boolean keep-mask that drops the n smallest scores (ties broken by index, deterministic)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if n > 0:
        order = torch.argsort(scores, stable=True)
        keep[order[:n]] = False
    return keep


def masks(model: nn.Module, head_ratio: float, ffn_ratio: float) -> dict[str, torch.Tensor]:
    """Keep-masks from coefficient magnitudes.

    heads: (L, H), `round(H * head_ratio)` smallest pruned in every layer.
    ffn:   (L, I), `round(L * I * ffn_ratio)` smallest pruned over all layers (global), keeping at
           least one neuron per layer so no layer loses its feed-forward path entirely.
    """
    coefs = coefficients(model)
    with torch.no_grad():
        heads = torch.stack([p.detach().abs().cpu() for p in coefs.heads])
        neurons = torch.stack([p.detach().abs().cpu() for p in coefs.neurons])
    n_heads = heads.shape[1]
    prune_h = min(round(n_heads * head_ratio), n_heads - 1)
    head_keep = torch.stack([_smallest(row, prune_h) for row in heads])
    scores = neurons.clone()
    scores[torch.arange(scores.shape[0]), scores.argmax(1)] = float("inf")
    n_prune = min(round(neurons.numel() * ffn_ratio), neurons.numel() - neurons.shape[0])
    ffn_keep = _smallest(scores.flatten(), n_prune).view_as(neurons)
    return {"heads": head_keep, "ffn": ffn_keep}


def apply_masks(model: nn.Module, mask: dict[str, torch.Tensor]) -> None:
    """Set the coefficients to the 0/1 mask: the masked model that physical removal must equal."""
    coefs = coefficients(model)
    with torch.no_grad():
        for i, p in enumerate(coefs.heads):
            p.copy_(mask["heads"][i].to(p.dtype))
        for i, p in enumerate(coefs.neurons):
            p.copy_(mask["ffn"][i].to(p.dtype))


def _slice_linear(linear: nn.Linear, idx: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping rows (dim=0, outputs) or columns (dim=1, inputs) `idx`."""
    idx = idx.to(linear.weight.device)
    weight = linear.weight.detach().index_select(dim, idx).clone()
    out_f, in_f = weight.shape
    new = nn.Linear(in_f, out_f, bias=linear.bias is not None, device=weight.device,
                    dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None and new.bias is not None:
            bias = linear.bias.detach()
            new.bias.copy_(bias.index_select(0, idx) if dim == 0 else bias)
    new.requires_grad_(linear.weight.requires_grad)
    new.train(linear.training)
    return new


def check_masks(model: nn.Module, mask: dict[str, torch.Tensor]) -> None:
    layers = find_layers(model)
    heads, ffn = mask.get("heads"), mask.get("ffn")
    if heads is None or ffn is None:
        raise ConfigError(f"a BERT ticket needs 'heads' and 'ffn' masks, got {sorted(mask)}")
    want_h = (len(layers), _num_heads(layers[0]) if layers else 0)
    want_f = (len(layers), layers[0].intermediate.dense.out_features if layers else 0)
    if tuple(heads.shape) != want_h or tuple(ffn.shape) != want_f:
        raise ConfigError(f"ticket masks (heads {tuple(heads.shape)}, ffn {tuple(ffn.shape)}) do "
                         f"not fit this model (heads {want_h}, ffn {want_f}); was the ticket drawn "
                         "on another model, or is this model already pruned?")
    if not heads.any(1).all() or not ffn.any(1).all():
        raise ConfigError("a ticket mask removes every head or every neuron of a layer; lower the "
                         "pruning ratios")


def prune(model: nn.Module, mask: dict[str, torch.Tensor]) -> list[str]:
    """Physically remove the heads and neurons whose mask is False; returns the changed layers."""
    if hasattr(model, COEFFICIENTS_ATTR):
        raise ModelError("detach(model) the early-bird coefficients before pruning")
    check_masks(model, mask)
    names = {id(m): n for n, m in model.named_modules()}
    changed = []
    for i, layer in enumerate(find_layers(model)):
        att, d = layer.attention.self, _head_size(layer)
        kept_heads = torch.nonzero(mask["heads"][i]).flatten()
        if len(kept_heads) < _num_heads(layer):
            idx = (kept_heads[:, None] * d + torch.arange(d)[None, :]).flatten()
            att.query = _slice_linear(att.query, idx, 0)
            att.key = _slice_linear(att.key, idx, 0)
            att.value = _slice_linear(att.value, idx, 0)
            layer.attention.output.dense = _slice_linear(layer.attention.output.dense, idx, 1)
            # Kept in step for code that reads them (the forward itself only uses head size).
            att.num_attention_heads = len(kept_heads)
            att.all_head_size = len(kept_heads) * d
        kept = torch.nonzero(mask["ffn"][i]).flatten()
        if len(kept) < layer.intermediate.dense.out_features:
            layer.intermediate.dense = _slice_linear(layer.intermediate.dense, kept, 0)
            layer.output.dense = _slice_linear(layer.output.dense, kept, 1)
        changed.append(names[id(layer)])
    return changed


def describe(model: nn.Module) -> dict[str, list[int]]:
    """Per-layer head counts and FFN sizes: what `restore` needs to rebuild a pruned model's shapes.

    Reads `out_features`, so it also works after low-rank factorization of the pruned layers.
    """
    layers = find_layers(model)
    if not layers:
        raise ModelError(f"{type(model).__name__} has no BERT-like layers to describe")
    heads, ffn = [], []
    for layer in layers:
        att = layer.attention.self
        out = getattr(att.query, "out_features", None)
        heads.append(int(out) // _head_size(layer) if out is not None
                     else int(att.num_attention_heads))
        ffn.append(int(layer.intermediate.dense.out_features))
    return {"heads": heads, "ffn": ffn}


def restore(model: nn.Module, description: dict[str, list[int]]) -> list[str]:
    """Give a freshly built (unpruned) model the shapes `describe` recorded, before loading weights.

    Only the shapes matter (the weights are overwritten by the saved state dict), so the first
    heads / neurons of every layer are kept.
    """
    try:
        heads = [int(h) for h in description["heads"]]
        ffn = [int(f) for f in description["ffn"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"not a pruned-BERT description ({exc}); it comes from "
                         "bert_structure.describe") from exc
    layers = find_layers(model)
    if len(heads) != len(layers) or len(ffn) != len(layers):
        raise ModelError(f"the description has {len(heads)} layers, the model {len(layers)}; was it "
                         "built like the pruned one?")
    n_heads, n_ffn = _num_heads(layers[0]), layers[0].intermediate.dense.out_features
    if not all(0 < h <= n_heads for h in heads) or not all(0 < f <= n_ffn for f in ffn):
        raise ModelError(f"described widths (heads {heads}, ffn {ffn}) do not fit a model with "
                         f"{n_heads} heads and {n_ffn} FFN neurons per layer")
    mask = {
        "heads": torch.arange(n_heads)[None, :] < torch.tensor(heads)[:, None],
        "ffn": torch.arange(n_ffn)[None, :] < torch.tensor(ffn)[:, None],
    }
    return prune(model, mask)
