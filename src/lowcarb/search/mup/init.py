"""Initialisation by parameter kind (the same for muP and SP except readout and query).

- Linear weights (hidden, matrix-like, and the MLP input layer): N(0, init_std^2 / fan_in).
  With fan_in growing this is the 1/fan_in variance muP asks for; for a finite fan_in (the MLP
  input) it is width-independent, as a vector-like input layer needs.
- Embeddings (vector-like: vocabulary is finite): N(0, init_std^2), width-independent.
- Biases zero, LayerNorm gains one.
- Readout: zero under muP (`readout_zero_init`), else N(0, init_std^2 / fan_in); its output is
  already multiplied by base_width / width, so either choice keeps logits O(1).
- Query: zero under muP (`query_zero_init`), so that attention starts uniform at every width and
  the 1/d_head logit scaling cannot blow up at init.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lowcarb.errors import ModelError
from lowcarb.search.mup.config import MupModelConfig
from lowcarb.search.mup.layers import MuReadout, SelfAttention


@torch.no_grad()
def init_weights(model: nn.Module, cfg: MupModelConfig | None = None) -> None:
    cfg = cfg or getattr(model, "config", None)
    if not isinstance(cfg, MupModelConfig):
        raise ModelError("init_weights needs a MupModelConfig (model.config or the cfg argument)")
    mup = cfg.parametrization == "mup"
    for module in model.modules():
        if isinstance(module, nn.Linear):
            fan_in = module.weight.shape[1]
            module.weight.normal_(0.0, cfg.init_std / math.sqrt(fan_in))
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, cfg.init_std)
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                module.weight.fill_(1.0)
            if module.bias is not None:
                module.bias.zero_()
    # Second pass: the muP exceptions override the generic Linear init above.
    for module in model.modules():
        if isinstance(module, MuReadout) and mup and cfg.readout_zero_init:
            module.weight.zero_()
        elif isinstance(module, SelfAttention) and mup and cfg.query_zero_init:
            module.q.weight.zero_()
