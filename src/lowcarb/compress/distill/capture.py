"""Capture what distillation losses compare: hidden states and the attention queries, keys, values.

Everything is read through forward hooks, so the models run their normal (fused, SDPA) forward
and no `output_attentions=True` flag is needed: attention distributions are recomputed from the
captured queries and keys (`attention_probs`), which is exactly what the eager kernel computes.

Supported layouts:
- Hugging Face BERT-style encoders (BERT, MiniLM, RoBERTa, ...): `model.base_model.encoder.layer[i]`
  with `attention.self.{query,key,value}` Linears and `base_model.embeddings`.
- Reference transformers that keep their blocks in a `layers` or `blocks` ModuleList: hidden states
  only, plus Q/K/V when a block has `query`/`key`/`value` Linears (under `attn`/`attention`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks, bottom first; ValueError when there is none."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    decoder = getattr(base, "decoder", None)
    # Hugging Face: encoder.layer; torch.nn.TransformerEncoder (the reference TextTransformer):
    # encoder.layers; Llama-style decoders: model.layers; GPT-2 / GPT-J / Bloom: transformer.h;
    # OPT: decoder.layers; other reference models: blocks.
    owners = ((encoder, "layer"), (encoder, "layers"), (base, "layers"), (base, "h"), (decoder, "layers"),
              (base, "blocks"))  # fmt: skip
    for owner, name in owners:
        layers = getattr(owner, name, None) if owner is not None else None
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return layers
    raise ValueError(
        f"{type(model).__name__} has no list of transformer blocks: distillation needs a "
        "Hugging Face BERT-style encoder (base_model.encoder.layer), a decoder LM with its blocks in "
        "model.layers, transformer.h or decoder.layers, an nn.TransformerEncoder (encoder.layers) "
        "or a model with a `layers` or `blocks` nn.ModuleList"
    )


def embedding_module(model: nn.Module) -> nn.Module | None:
    """Hugging Face's embeddings module (its output is hidden state 0), if the model has one.

    Other models may add positions after their token embedding, so for them hidden state 0 is
    read as the first block's input instead.
    """
    base = getattr(model, "base_model", model)
    module = getattr(base, "embeddings", None)
    return module if isinstance(module, nn.Module) else None


def qkv_linears(layer: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear] | None:
    """The query, key and value projections of one block, or None when it has no separate ones."""
    for path in ("attention.self", "attn", "attention", "self_attn"):
        module: nn.Module | None = layer
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if module is None:
            continue
        q, k, v = (getattr(module, n, None) for n in ("query", "key", "value"))
        if all(isinstance(m, nn.Linear) for m in (q, k, v)):
            return q, k, v  # type: ignore[return-value]
    return None


def num_heads_of(model: nn.Module) -> int:
    """Number of attention heads, from a Hugging Face config or the blocks themselves."""
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    if heads is None:
        for layer in encoder_layers(model):
            for module in layer.modules():
                for attr in ("num_attention_heads", "num_heads", "n_head", "n_heads"):
                    if isinstance(getattr(module, attr, None), int):
                        return int(getattr(module, attr))
        raise ValueError(
            f"cannot tell how many attention heads {type(model).__name__} has: give the model a "
            "`config.num_attention_heads` or its attention modules a `num_heads` attribute"
        )
    return int(heads)


def hidden_width(model: nn.Module) -> int:
    """Width of the hidden states between blocks."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "hidden_size"):
        return int(config.hidden_size)
    norms = [m for m in encoder_layers(model)[-1].modules() if isinstance(m, nn.LayerNorm)]
    if norms:
        return int(norms[-1].normalized_shape[-1])
    raise ValueError(f"cannot tell the hidden width of {type(model).__name__}")


@dataclass
class Trace:
    """What one forward pass produced, per layer, bottom first.

    hidden[0] is the embedding output and hidden[i + 1] the output of block i (B, T, width).
    query/key/value[i] are block i's projections before the head split (B, T, heads * head_dim).
    """

    hidden: list[Tensor] = field(default_factory=list)
    query: list[Tensor] = field(default_factory=list)
    key: list[Tensor] = field(default_factory=list)
    value: list[Tensor] = field(default_factory=list)

    def clear(self) -> None:
        for values in (self.hidden, self.query, self.key, self.value):
            values.clear()


def _first_tensor(output: object) -> Tensor:
    # Blocks return a tensor (transformers >= 5) or a tuple whose first item is the hidden state.
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, Tensor):
        return hidden
    raise TypeError(f"cannot read a hidden state from a block output of type {type(output)}")


@contextmanager
def trace(model: nn.Module, *, hidden: bool = True, qkv: bool = True) -> Iterator[Trace]:
    """Record hidden states and Q/K/V of every forward pass run inside the block.

    The trace is cleared at the start of each forward pass of the whole model, so after
    `model(**batch)` it holds that pass only. Tensors keep their autograd graph (student side).
    """
    layers = encoder_layers(model)
    record = Trace()
    handles = []
    handles.append(model.register_forward_pre_hook(lambda _m, _a: record.clear()))
    if hidden:
        embeddings = embedding_module(model)
        if embeddings is None:
            handles.append(
                layers[0].register_forward_pre_hook(
                    lambda _m, args, kwargs: record.hidden.append(
                        args[0] if args else next(iter(kwargs.values()))
                    ),
                    with_kwargs=True,
                )
            )
        else:
            handles.append(
                embeddings.register_forward_hook(
                    lambda _m, _a, out: record.hidden.append(_first_tensor(out))
                )
            )
        for layer in layers:
            handles.append(
                layer.register_forward_hook(
                    lambda _m, _a, out: record.hidden.append(_first_tensor(out))
                )
            )
    if qkv:
        for index, layer in enumerate(layers):
            linears = qkv_linears(layer)
            if linears is None:
                for handle in handles:
                    handle.remove()
                raise ValueError(
                    f"block {index} of {type(model).__name__} has no separate query/key/value "
                    "Linears; attention and relation losses need them (use hidden-state or "
                    "logit distillation for this model)"
                )
            for store, linear in zip((record.query, record.key, record.value), linears, strict=True):
                handles.append(
                    linear.register_forward_hook(lambda _m, _a, out, s=store: s.append(out))
                )
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, T, heads * d) -> (B, heads, T, d); ValueError when the width does not divide."""
    batch, length, width = x.shape
    if width % heads:
        raise ValueError(
            f"width {width} is not divisible by {heads} heads: choose a head count that divides it"
        )
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def relation_logits(a: Tensor, b: Tensor, heads: int, mask: Tensor | None) -> Tensor:
    """Scaled dot products a b^T per head, (B, heads, T, T), padded key positions masked out.

    With a = queries and b = keys this is the pre-softmax attention score; with a = b = values
    it is MiniLM's value relation.
    """
    ah, bh = split_heads(a, heads), split_heads(b, heads)
    scores = ah @ bh.transpose(-1, -2) / math.sqrt(ah.shape[-1])
    if mask is not None:
        # The dtype's most negative finite value, not -inf: softmax gives exactly 0 there and
        # differences of two masked log-probabilities stay finite (no 0 * nan in KL terms).
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores


def attention_probs(query: Tensor, key: Tensor, heads: int, mask: Tensor | None) -> Tensor:
    """Self-attention distributions (B, heads, T, T) as the model computes them (no dropout)."""
    return torch.softmax(relation_logits(query, key, heads, mask), dim=-1)
