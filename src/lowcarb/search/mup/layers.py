"""The layers where muP differs from the standard parametrization (readout, attention)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lowcarb.search.mup.config import MupModelConfig


class MuReadout(nn.Linear):
    """The output layer. Under muP its input is multiplied by output_mult * base_width / width.

    With that factor in the forward pass the readout weight itself is vector-like (one infinite
    dimension): Adam keeps the base learning rate for it (microsoft/mup's MuReadout convention).
    """

    def __init__(self, in_features: int, out_features: int, multiplier: float, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.multiplier = multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * self.multiplier)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, multiplier={self.multiplier:g}"


class Probe(nn.Identity):
    """A no-op module placed where the coordinate check wants to read activations."""


class SelfAttention(nn.Module):
    def __init__(self, cfg: MupModelConfig, causal: bool):
        super().__init__()
        w = cfg.width
        self.n_heads, self.d_head = cfg.heads()
        _, base_d_head = cfg.heads(cfg.base_width)
        if cfg.parametrization == "mup":
            # 1/d_head (not 1/sqrt) because q and k become correlated during training and their dot
            # product then grows like d_head; normalised so the two agree at the base width.
            self.scale = math.sqrt(base_d_head) / self.d_head
        else:
            self.scale = 1.0 / math.sqrt(self.d_head)
        self.causal = causal
        self.q = nn.Linear(w, w)
        self.k = nn.Linear(w, w)
        self.v = nn.Linear(w, w)
        self.o = nn.Linear(w, w)
        self.logits = Probe()

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        q = self.q(x).view(b, t, self.n_heads, self.d_head).transpose(1, 2)  # (b, h, t, dh)
        k = self.k(x).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        v = self.v(x).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        if not self.logits._forward_hooks:
            # Nobody reads the logits: the fused kernel computes the same thing with less time
            # spent on the (b, h, t, t) mask and softmax, whose size does not grow with width.
            keep = None if pad_mask is None else pad_mask[:, None, None, :]
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=keep, is_causal=self.causal, scale=self.scale
            )
            return self.o(y.transpose(1, 2).reshape(b, t, c))
        att = self.logits((q @ k.transpose(-2, -1)) * self.scale)  # (b, h, t, t)
        if self.causal:
            future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            att = att.masked_fill(future, float("-inf"))
        if pad_mask is not None:  # (b, t), True where a real token is
            att = att.masked_fill(~pad_mask[:, None, None, :], float("-inf"))
        y = att.softmax(dim=-1) @ v  # (b, h, t, dh)
        return self.o(y.transpose(1, 2).reshape(b, t, c))


class FeedForward(nn.Module):
    def __init__(self, width: int, ratio: int):
        super().__init__()
        self.fc = nn.Linear(width, ratio * width)
        self.proj = nn.Linear(ratio * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-LN transformer block; `branch_mult` is CompleteP's base_depth/depth (1 otherwise)."""

    def __init__(self, cfg: MupModelConfig, causal: bool, branch_mult: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width)
        self.attn = SelfAttention(cfg, causal)
        self.ln2 = nn.LayerNorm(cfg.width)
        self.mlp = FeedForward(cfg.width, cfg.mlp_ratio)
        self.branch_mult = branch_mult
        self.out = Probe()

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.branch_mult * self.attn(self.ln1(x), pad_mask)
        x = x + self.branch_mult * self.mlp(self.ln2(x))
        return self.out(x)
