"""Model surgery shared by every transform: batch fields, module replacement, target selection and
the one rule for counting parameters.

    args, kwargs = call_args(batch)                  # a batch as the model's call arguments
    set_module(model, "encoder.layer.0.output.dense", new_layer)
    names = select_modules(model, (nn.Linear,), targets=("*encoder*",), exclude=(), what="Linear")
    n = count_parameters(model)                      # tied weights once, int8 weights included
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from lowcarb.errors import ConfigError

__all__ = [
    "LABELS",
    "WithoutLabels",
    "batch_from_spec",
    "batch_spec",
    "call_args",
    "count_parameters",
    "keep_ordinary_path",
    "listing",
    "matches_any",
    "quantized_weights",
    "read_directly",
    "select_modules",
    "set_module",
    "without_labels",
]

# The batch key holding the targets; every other key is a keyword argument of the model.
LABELS = "labels"

# Where torch.ao's int8 modules live (plain, and fused such as ConvReLU2d / LinearReLU).
_QUANTIZED_MODULES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")
# lowcarb's own int8 modules keep their int8 values in buffers (vocab's CompactEmbedding; its
# 4-bit rows hold two values per byte).
_INT8_BUFFERS = ("weight_int8", "rows_int8", "rows_int4")


def without_labels(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch minus its labels: what the model reads."""
    return {k: v for k, v in batch.items() if k != LABELS}


def call_args(batch: Any, device: torch.device | None = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A batch as ``model(*args, **kwargs)``: a dict (labels dropped) becomes keywords; a tuple or
    list (features, labels) gives its first item; a tensor is the one positional argument.
    With ``device`` (the model's), its tensors are moved there: loaders give host batches."""
    if isinstance(batch, Mapping):
        args: tuple[Any, ...] = ()
        kwargs = without_labels(batch)
    elif isinstance(batch, (tuple, list)):
        args, kwargs = (batch[0],), {}
    else:
        args, kwargs = (batch,), {}
    if device is None:
        return args, kwargs

    def moved(v: Any) -> Any:
        return v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v

    return tuple(moved(a) for a in args), {k: moved(v) for k, v in kwargs.items()}


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted, as in ``named_modules``) by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
    parts = name.split(".")
    for i in range(len(parts)):
        keep_ordinary_path(model.get_submodule(".".join(parts[:i])))


def conv_geometry(conv: nn.Conv1d | nn.Conv2d) -> dict[str, Any]:
    """Keyword arguments that give a new convolution `conv`'s kernel, stride, padding and dilation.

    torch types these attributes `tuple[int, ...]` while the constructors want a tuple of their
    own rank; the values are the module's own, so they fit the same class by construction.
    """
    return {"kernel_size": conv.kernel_size, "stride": conv.stride, "padding": conv.padding,
            "dilation": conv.dilation}


def keep_ordinary_path(module: nn.Module) -> None:
    """PyTorch's fused TransformerEncoderLayer kernel reads ``linear1`` / ``linear2``'s weights
    directly instead of calling them; once a transform replaced one of them (factorized, adapters,
    int8 modules), the layer must take its ordinary path, which calls the modules. The fused path
    is used only when ``activation_relu_or_gelu`` is set, so clearing it turns the fused path off."""
    for layer in module.modules():
        if isinstance(layer, nn.TransformerEncoderLayer) and not (
            type(layer.linear1) is nn.Linear and type(layer.linear2) is nn.Linear
        ):
            layer.activation_relu_or_gelu = 0


def read_directly(model: nn.Module) -> set[str]:
    """Names of Linears whose owner reads their weight instead of calling them (the output
    projection of nn.MultiheadAttention): replacing one would break its owner."""
    return {
        f"{name}.out_proj" if name else "out_proj"
        for name, module in model.named_modules()
        if isinstance(module, nn.MultiheadAttention)
    }


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def listing(names: Iterable[str], limit: int = 24) -> str:
    """Names for an error message: the first ``limit``, then how many more."""
    keys = list(names)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def select_modules(
    candidates: Mapping[str, nn.Module],
    targets: Iterable[str],
    exclude: Iterable[str],
    what: str,
    listed_as: str | None = None,
) -> list[str]:
    """Names of ``candidates`` matched by a ``targets`` pattern and by no ``exclude`` pattern
    (fnmatch over module names). A pattern that matches nothing, or a selection left empty, is a
    ConfigError that lists the candidates (introduced by ``listed_as``)."""
    targets, exclude = tuple(targets), tuple(exclude)
    intro = listed_as or f"{what} modules are"
    if not candidates:
        raise ConfigError(f"the model has no {what} modules to transform")
    for pattern in targets:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in candidates):
            raise ConfigError(
                f"target pattern {pattern!r} matches no {what} module; {intro}: "
                f"{listing(candidates)}"
            )
    chosen = [n for n in candidates if matches_any(n, targets) and not matches_any(n, exclude)]
    if not chosen:
        raise ConfigError(
            f"targets {list(targets)} minus exclude {list(exclude)} leave no {what}; "
            f"{intro}: {listing(candidates)}"
        )
    return chosen


def quantized_weights(model: nn.Module) -> Iterator[tuple[nn.Module, torch.Tensor]]:
    """(module, int8 weight) for every torch.ao quantized module (they keep their packed weights
    out of ``parameters()``)."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if callable(weight) and type(module).__module__.startswith(_QUANTIZED_MODULES):
            yield module, weight()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """The one parameter count of lowcarb: distinct parameters (tied weights once), with the int8
    weights that quantized modules keep outside ``parameters()`` (torch.ao packed weights, int8
    buffers) counted as the parameters they replace. torchao's quantized weights are parameters
    whose ``numel`` is the logical weight's, so they count like the fp32 weight they replace.

    A quantized layer marked ``counted_elsewhere`` (a tied lm_head quantized apart from the input
    embedding, which keeps the float weight) is not counted again: the model has the parameters it
    had, and what the second copy costs shows in the size in bytes. Zero columns that pad an int8
    weight past ``in_features`` (PackedInt8Linear) are not parameters."""
    skipped = {id(p) for m in model.modules() if getattr(m, "counted_elsewhere", False)
               for p in m.parameters(recurse=False)}  # fmt: skip
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or id(p) in skipped or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    if trainable_only:  # quantized weights are frozen by construction
        return total
    for module, weight in quantized_weights(model):
        packed_bias = getattr(module, "bias", None)
        bias = packed_bias() if callable(packed_bias) else None
        total += weight.numel() + (bias.numel() if bias is not None else 0)
    for module in model.modules():
        if getattr(module, "counted_elsewhere", False):
            continue
        for name in _INT8_BUFFERS:
            buffer = module._buffers.get(name)
            if buffer is not None:
                total += _logical_numel(module, name, buffer)
    return total


def _logical_numel(module: nn.Module, name: str, buffer: torch.Tensor) -> int:
    width = getattr(module, "in_features", None)
    if name == "weight_int8" and buffer.dim() == 2 and isinstance(width, int):
        return int(buffer.shape[0]) * width  # padding columns are not parameters
    if name == "rows_int4":
        return 2 * buffer.numel()  # two 4-bit codes per byte
    return buffer.numel()


def batch_spec(batch: Mapping[str, Any] | Any) -> dict[str, Any]:
    """Shapes and dtypes of a batch's model inputs (JSON), enough to trace the model again."""
    if not isinstance(batch, Mapping):
        batch = {"": batch[0] if isinstance(batch, (tuple, list)) else batch}
    return {
        k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
        for k, v in without_labels(batch).items()
    }


def batch_from_spec(spec: Mapping[str, Any]) -> Any:
    """A batch of zeros with the shapes of ``batch_spec`` (zeros are valid token ids and pixels);
    the key "" stands for a tensor passed positionally."""
    batch = {k: torch.zeros(v["shape"], dtype=getattr(torch, v["dtype"])) for k, v in spec.items()}
    return batch[""] if set(batch) == {""} else batch


class WithoutLabels:
    """A sized loader whose batches carry no labels (distillation and supernets read text only)."""

    def __init__(self, loader: Iterable[Mapping[str, Any]]) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            yield without_labels(batch)
