"""LoRA: low-rank adapters on frozen weights (Hu et al. 2021, after microsoft/LoRA).

`summary = apply(model, LoraConfig(r=8, alpha=16, target_modules=("query", "value")))` replaces each
chosen `nn.Linear`, `nn.Embedding`, `nn.Conv1d` or `nn.Conv2d` by a wrapper that adds
`scaling * B(A(x))` to the frozen base output. A is Kaiming-uniform and B is zero, so the wrapped
model starts exactly equal to the base. Only adapter parameters (and the modules named in
`modules_to_save`, such as a classifier head) stay trainable.

`merge(model)` folds `scaling * B @ A` into each base weight and `unmerge(model)` takes it out again;
`merge_and_unload(model)` returns a plain model (the original module types, no extra latency).

The wrapper keeps PEFT's attribute names (`base_layer`, `lora_A`, `lora_B`, `lora_embedding_A`,
`lora_embedding_B`) so that adapter files map one to one onto PEFT's key names (see peft_format).
On a Linear, the forward pass uses lora_A's and lora_B's weights through one autograd function
(`_LinearDelta`, for speed) instead of calling the two modules, unless those modules have hooks,
quantized weights or another type (`_fast_path_applies`). Its backward pass is not itself
differentiable (second-order gradients raise).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lowcarb.errors import ConfigError
from lowcarb.models.state import is_subclass_tensor
from lowcarb.models.surgery import conv_geometry, count_parameters, read_directly, set_module
from lowcarb.models.transforms import (
    TransformSummary,
    forget,
    record,
    register_transform,
    replace_structure,
)

ALL_LINEAR = "all-linear"
# Attribute on the root model holding the LoraConfig, so adapters can be saved without re-passing it.
CONFIG_ATTR = "lowcarb_lora_config"

_SUPPORTED = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class LoraConfig:
    """Which modules get adapters and how they are shaped.

    target_modules: module-name patterns, or "all-linear". A pattern matches a module whose full
      name equals it or ends with "." + pattern ("query" matches "bert.encoder.layer.0...query");
      patterns with *, ? or [ are shell globs on the full name ("*.attention.self.query").
    modules_to_save: modules trained in full alongside the adapters (same matching rule).
    scaling is alpha / r, or alpha / sqrt(r) with use_rslora (Kalajdzievski 2023), which keeps the
    update's scale stable as r grows.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | str = ("query", "value")
    modules_to_save: tuple[str, ...] = ()
    use_rslora: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r <= 0:
            raise ConfigError(f"LoRA rank r must be a positive integer, got {self.r!r}; try r=8")
        if self.alpha <= 0:
            raise ConfigError(f"LoRA alpha must be > 0, got {self.alpha!r}; a common choice is 2*r")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        targets = self.target_modules
        if isinstance(targets, str) and targets != ALL_LINEAR:
            # A lone string other than "all-linear" is one pattern; store it as a tuple.
            object.__setattr__(self, "target_modules", (targets,))
        elif not isinstance(targets, str):
            object.__setattr__(self, "target_modules", tuple(targets))
        if not self.target_modules:
            raise ConfigError("LoRA target_modules is empty; name modules (e.g. ('query', 'value')) "
                             "or use 'all-linear'")
        object.__setattr__(self, "modules_to_save", tuple(self.modules_to_save))

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = (
            self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        )
        d["modules_to_save"] = list(self.modules_to_save)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoraConfig:
        known = {"r", "alpha", "dropout", "target_modules", "modules_to_save", "use_rslora"}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown LoRA config fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


class LoraLayer(nn.Module):
    """A frozen base layer plus a rank-r update, scaled by `scaling`.

    Linear: lora_A Linear(in, r), lora_B Linear(r, out).
    Conv:   lora_A Conv(in, r, kernel, stride, padding, dilation), lora_B Conv(r, out, 1).
    Embedding: parameters lora_embedding_A (r, num_embeddings), lora_embedding_B (dim, r),
      as PEFT names them.
    """

    lora_A: nn.Linear | nn.Conv1d | nn.Conv2d
    lora_B: nn.Linear | nn.Conv1d | nn.Conv2d

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float, use_rslora: bool):
        super().__init__()
        if not isinstance(base, _SUPPORTED):
            raise ConfigError(f"LoRA supports {[c.__name__ for c in _SUPPORTED]}, "
                             f"not {type(base).__name__}")
        if isinstance(base, (nn.Conv1d, nn.Conv2d)) and base.groups != 1:
            raise ConfigError(f"LoRA on grouped convolutions (groups={base.groups}) is not "
                             "supported; leave this module out of target_modules")
        self.base_layer = base
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / (math.sqrt(r) if use_rslora else r)
        self.merged = False
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        device, dtype = base.weight.device, base.weight.dtype
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        if isinstance(base, nn.Linear):
            self.lora_A = nn.Linear(base.in_features, r, bias=False, **kw)
            self.lora_B = nn.Linear(r, base.out_features, bias=False, **kw)
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B.weight)
        elif isinstance(base, nn.Embedding):
            self.lora_embedding_A = nn.Parameter(torch.empty(r, base.num_embeddings, **kw))
            self.lora_embedding_B = nn.Parameter(torch.zeros(base.embedding_dim, r, **kw))
            nn.init.kaiming_uniform_(self.lora_embedding_A, a=math.sqrt(5))
        else:
            conv: type[nn.Conv1d] | type[nn.Conv2d] = (
                nn.Conv1d if isinstance(base, nn.Conv1d) else nn.Conv2d)
            self.lora_A = conv(base.in_channels, r, bias=False, **conv_geometry(base), **kw)
            self.lora_B = conv(r, base.out_channels, 1, 1, bias=False, **kw)
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B.weight)

    def delta_weight(self) -> torch.Tensor:
        """scaling * B A, shaped like the base weight."""
        base = self.base_layer
        if isinstance(base, nn.Linear):
            return (self.lora_B.weight @ self.lora_A.weight) * self.scaling
        if isinstance(base, nn.Embedding):
            # weight is (num_embeddings, dim); B A is (dim, num_embeddings).
            return (self.lora_embedding_B @ self.lora_embedding_A).T * self.scaling
        # conv: B is (out, r, 1[,1]), A is (r, in, k...): contract over r.
        b = self.lora_B.weight.flatten(1)  # (out, r)
        a = self.lora_A.weight  # (r, in, *k)
        return torch.einsum("or,r...->o...", b, a) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        base = self.base_layer
        if isinstance(base, nn.Embedding):
            after_a = F.embedding(x, self.lora_embedding_A.T, base.padding_idx, base.max_norm,
                                  base.norm_type, base.scale_grad_by_freq, base.sparse)
            return y + (after_a @ self.lora_embedding_B.T) * self.scaling
        after_dropout = self.lora_dropout(x)
        if isinstance(base, nn.Linear) and _fast_path_applies(self, y, after_dropout):
            out = _LinearDelta.apply(y.reshape(-1, y.shape[-1]),
                                     after_dropout.reshape(-1, after_dropout.shape[-1]),
                                     self.lora_A.weight, self.lora_B.weight, self.scaling)
            return out.view(y.shape)
        return y + self.lora_B(self.lora_A(after_dropout)) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base_layer.weight += self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base_layer.weight -= self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = False

    def adapter_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.named_parameters():
            if not name.startswith("base_layer."):
                yield name, p

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:.4g}, merged={self.merged}"


def _fast_path_applies(layer: LoraLayer, y: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether `_LinearDelta` may stand in for calling lora_A and lora_B. It reads their weights
    as plain tensors of one dtype, so the modules' own calls are kept when autocast is on (it
    casts module calls), when a weight is a tensor subclass (torchao's quantized weights, which
    only their own linear kernel takes), when either module has been replaced by another type,
    or when either has hooks of its own (calibration, casts), which must keep firing."""
    a, b = layer.lora_A, layer.lora_B
    if type(a) is not nn.Linear or type(b) is not nn.Linear:
        return False
    if is_subclass_tensor(a.weight) or is_subclass_tensor(b.weight):
        return False
    if a._forward_hooks or a._forward_pre_hooks or b._forward_hooks or b._forward_pre_hooks:
        return False
    return (y.dtype == x.dtype == a.weight.dtype == b.weight.dtype
            and not torch.is_autocast_enabled(x.device.type))


class _LinearDelta(torch.autograd.Function):
    """y + scaling * (x A^T) B^T for 2-D y (T, out) and x (T, in), A (r, in), B (out, r).

    Autograd through two nn.Linear calls computes the same thing, but it orients each matmul as
    a full-rank layer wants; with one side only r wide, several of those orientations (the
    gradients of A and B above all) ran several times slower than the transposed product on CPU
    BLAS when profiled on MiniLM's layers (the claim is lora_minilm's step-time ratio). Here each
    product is taken in its fast orientation (transposes are free views), the update is added
    by one addmm instead of a multiply and an add, and the scaling is applied to the r-wide
    activations rather than to the full-width output. The result equals the plain computation up
    to float rounding (tests compare values and gradients with it).
    """

    @staticmethod
    def forward(
        ctx: Any, y: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float
    ) -> torch.Tensor:
        h_scaled = (a @ x.t()).t() * scaling  # (T, r)
        ctx.save_for_backward(x, a, b, h_scaled)
        ctx.scaling = scaling
        return torch.addmm(y, h_scaled, b.t())

    @staticmethod
    @torch.autograd.function.once_differentiable  # h_scaled is saved without its graph
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        x, a, b, h_scaled = ctx.saved_tensors
        need_y, need_x, need_a, need_b, _ = ctx.needs_input_grad
        grad_h = (b.t() @ grad.t()).t() * ctx.scaling if (need_x or need_a) else None  # (T, r)
        return (
            grad if need_y else None,
            grad_h @ a if need_x and grad_h is not None else None,
            grad_h.t() @ x if need_a and grad_h is not None else None,
            (h_scaled.t() @ grad).t() if need_b else None,
            None,
        )


def _matches(name: str, pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern or name.endswith("." + pattern)


def _output_head_names(model: nn.Module) -> set[str]:
    # "all-linear" leaves the output head alone (as PEFT does): adapting the layer that produces the
    # logits adds nothing a trained head does not, and heads are usually in modules_to_save.
    heads: set[str] = set()
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    for name, module in model.named_modules():
        if out is not None and module is out:
            heads.add(name)
        if name.split(".")[-1] in {"classifier", "score", "lm_head", "head", "fc_out"}:
            heads.add(name)
    return heads


def _select(model: nn.Module, config: LoraConfig) -> list[str]:
    direct = read_directly(model)  # attention's out_proj: its owner reads the weight, not calls it
    candidates = [(n, m) for n, m in model.named_modules()
                  if n and not isinstance(m, LoraLayer) and n not in direct]
    if config.target_modules == ALL_LINEAR:
        excluded = _output_head_names(model)
        excluded |= {n for n, _ in candidates
                     if any(_matches(n, p) for p in config.modules_to_save)}
        chosen = [n for n, m in candidates if isinstance(m, nn.Linear)
                  and n not in excluded and not any(n.startswith(e + ".") for e in excluded)]
        if not chosen:
            raise ConfigError("'all-linear' found no nn.Linear outside the output head in "
                             f"{type(model).__name__}")
        return chosen
    chosen = []
    for pattern in config.target_modules:
        hits = [n for n, _ in candidates if _matches(n, pattern)]
        if not hits:
            listing = ", ".join(n for n, m in candidates if isinstance(m, _SUPPORTED))
            raise ConfigError(f"LoRA target pattern {pattern!r} matches no module; "
                             f"modules LoRA can wrap: {listing}")
        chosen.extend(hits)
    chosen = list(dict.fromkeys(chosen))  # keep order, drop duplicates
    unsupported = [f"{n} ({type(model.get_submodule(n)).__name__})" for n in chosen
                   if not isinstance(model.get_submodule(n), _SUPPORTED)]
    if unsupported:
        raise ConfigError(f"LoRA target patterns matched modules it cannot wrap: {unsupported}; "
                         f"supported types: {[c.__name__ for c in _SUPPORTED]}")
    return chosen


def apply(model: nn.Module, config: LoraConfig) -> TransformSummary:
    """Wrap the chosen modules with LoRA adapters in place and freeze everything else.

    Details: ``trainable_params``, ``adapter_params``, ``modules_to_save``, ``scaling``.
    """
    if lora_layers(model):
        raise ConfigError("model already has LoRA adapters; merge_and_unload(model) first")
    params_before = count_parameters(model)
    chosen = _select(model, config)
    saved = [n for n, _ in model.named_modules()
             if n and any(_matches(n, p) for p in config.modules_to_save)]
    missing = [p for p in config.modules_to_save if not any(_matches(n, p) for n in saved)]
    if missing:
        names = ", ".join(n for n, _ in model.named_modules() if n and "." not in n)
        raise ConfigError(f"modules_to_save patterns {missing} match no module; top-level "
                          f"modules: {names}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        base = model.get_submodule(name)
        wrapper = LoraLayer(base, config.r, config.alpha, config.dropout, config.use_rslora)
        wrapper.train(base.training)  # a new module starts in training mode (dropout on)
        set_module(model, name, wrapper)
    for name in saved:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    setattr(model, CONFIG_ATTR, config)
    record(model, config, {"merged": False})
    adapter = sum(p.numel() for layer in lora_layers(model).values()
                  for _, p in layer.adapter_parameters())
    details = {
        "trainable_params": count_parameters(model, trainable_only=True),
        "adapter_params": adapter,
        "modules_to_save": saved,
        "scaling": config.scaling,
    }
    return TransformSummary(
        "lora", config, params_before, count_parameters(model), chosen, details, model=model
    )


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def _require_layers(model: nn.Module) -> dict[str, LoraLayer]:
    layers = lora_layers(model)
    if not layers:
        raise ConfigError("model has no LoRA adapters; call lowcarb.adapt.lora.apply(model, "
                         "LoraConfig(...)) first")
    return layers


def merge(model: nn.Module) -> None:
    """Fold every adapter into its base weight (the wrappers stay, so unmerge can undo it)."""
    for layer in _require_layers(model).values():
        layer.merge()
    replace_structure(model, LoraConfig, merged=True)


def unmerge(model: nn.Module) -> None:
    """Take every merged adapter out of its base weight again."""
    for layer in _require_layers(model).values():
        layer.unmerge()
    replace_structure(model, LoraConfig, merged=False)


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge the adapters and put the base modules back: a plain model with no LoRA code path."""
    for name, layer in _require_layers(model).items():
        layer.merge()
        set_module(model, name, layer.base_layer)
    if hasattr(model, CONFIG_ATTR):
        delattr(model, CONFIG_ATTR)
    forget(model, LoraConfig)  # a plain model again: nothing to replay
    return model


def config_of(model: nn.Module) -> LoraConfig:
    config = getattr(model, CONFIG_ATTR, None)
    if config is None:
        raise ConfigError("model has no LoRA config; it was not prepared with "
                         "lowcarb.adapt.lora.apply(model, LoraConfig(...))")
    return config


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter weights plus the modules_to_save weights, keyed by their names in `model`."""
    _require_layers(model)
    config = config_of(model)
    state: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(model).items():
        for pname, p in layer.adapter_parameters():
            state[f"{name}.{pname}"] = p.detach().cpu().contiguous()
    for name, module in model.named_modules():
        if name and any(_matches(name, p) for p in config.modules_to_save):
            for pname, p in module.named_parameters():
                state[f"{name}.{pname}"] = p.detach().cpu().contiguous()
    return state


def trainable_parameters(model: nn.Module) -> int:
    return count_parameters(model, trainable_only=True)


def _replay(model: nn.Module, config: LoraConfig, structure: dict[str, Any]) -> nn.Module:
    apply(model, config)
    if structure.get("merged"):
        # The saved base weights already hold the merged update: mark it so, without adding it.
        for layer in lora_layers(model).values():
            layer.merged = True
    return model


register_transform(LoraConfig, "lora", _replay, to_json=LoraConfig.to_dict)
