"""Width-parametrized reference models: an MLP, a decoder-only LM and an encoder classifier.

One code path serves both parametrizations; `MupModelConfig.parametrization` decides the three
places where muP and the standard parametrization (SP) differ in the forward pass:
- the readout multiplies its input by output_mult * base_width / width (SP: output_mult);
- attention logits are scaled by sqrt(base_d_head) / d_head (SP: 1 / sqrt(d_head));
- (init, in `init.py`) the readout and the query start at zero.
The learning-rate rules live in `optim.py`. At the base width every muP factor is 1, so a muP
model and an SP model with the same weights compute the same function and train the same way.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from lowcarb.errors import ConfigError
from lowcarb.search.mup.config import MupModelConfig
from lowcarb.search.mup.init import init_weights
from lowcarb.search.mup.layers import Block, MuReadout, Probe
from lowcarb.search.mup.shapes import infer_base_shapes, set_base_shapes


def _readout_mult(cfg: MupModelConfig) -> float:
    return cfg.output_mult / cfg.width_mult if cfg.parametrization == "mup" else cfg.output_mult


def _branch_mult(cfg: MupModelConfig) -> float:
    return 1.0 / cfg.depth_mult if cfg.depth_scaling == "completep" else 1.0


class _Transformer(nn.Module):
    def __init__(self, cfg: MupModelConfig, causal: bool, n_out: int):
        super().__init__()
        self.config = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos = nn.Embedding(cfg.max_len, cfg.width)
        self.embed = Probe()
        self.blocks = nn.ModuleList(Block(cfg, causal, _branch_mult(cfg)) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.readout = MuReadout(cfg.width, n_out, _readout_mult(cfg))

    def _trunk(self, input_ids: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.config.max_len:
            raise ConfigError(f"sequence length {t} exceeds max_len={self.config.max_len}")
        pos = torch.arange(t, device=input_ids.device)
        x = self.embed(self.tok(input_ids) + self.pos(pos))
        for block in self.blocks:
            x = block(x, pad_mask)
        return self.ln_f(x)


class TransformerLM(_Transformer):
    """Decoder-only language model: `forward(input_ids) -> logits (batch, seq, vocab)`."""

    def __init__(self, cfg: MupModelConfig):
        super().__init__(cfg, causal=True, n_out=cfg.vocab_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.readout(self._trunk(input_ids, None))


class EncoderClassifier(_Transformer):
    """Bidirectional encoder, mean-pooled over real tokens: `-> logits (batch, num_labels)`."""

    def __init__(self, cfg: MupModelConfig):
        super().__init__(cfg, causal=False, n_out=cfg.num_labels)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        pad_mask = attention_mask.bool() if attention_mask is not None else None
        h = self._trunk(input_ids, pad_mask)
        if pad_mask is None:
            pooled = h.mean(dim=1)
        else:
            m = pad_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.readout(pooled)


class MupMLP(nn.Module):
    """`depth` hidden layers of `width` ReLU units: `forward(x (batch, d_in)) -> logits`."""

    def __init__(self, cfg: MupModelConfig):
        super().__init__()
        self.config = cfg
        self.inp = nn.Linear(cfg.d_in, cfg.width)
        self.hidden = nn.ModuleList(nn.Linear(cfg.width, cfg.width) for _ in range(cfg.depth - 1))
        self.acts = nn.ModuleList(Probe() for _ in range(cfg.depth))
        self.readout = MuReadout(cfg.width, cfg.num_labels, _readout_mult(cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.acts[0](F.relu(self.inp(x)))
        for layer, probe in zip(self.hidden, self.acts[1:], strict=True):
            h = probe(F.relu(layer(h)))
        return self.readout(h)


_CLASSES: dict[str, type[nn.Module]] = {
    "mlp": MupMLP,
    "lm": TransformerLM,
    "encoder": EncoderClassifier,
}


def construct(cfg: MupModelConfig) -> nn.Module:
    """The bare module (PyTorch's default init, no base shapes); prefer `build_model`."""
    return _CLASSES[cfg.kind](cfg)


def build_model(cfg: MupModelConfig, *, init: bool = True) -> nn.Module:
    """Build the model, find its base shapes (base width vs twice it, on the meta device), attach
    them, and initialise the weights by the rules of its parametrization."""
    model = construct(cfg)
    with torch.device("meta"):
        base = construct(replace(cfg, width=cfg.base_width))
        delta = construct(replace(cfg, width=cfg.base_width * 2))
    set_base_shapes(model, infer_base_shapes(base, delta))
    if init:
        init_weights(model)
    return model
