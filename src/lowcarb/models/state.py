"""A model's state as plain tensors (for safetensors) plus JSON saying how to rebuild each entry.

State dicts of quantized models hold more than plain tensors: torch.ao's int8 tensors (integer
values, scales, zero points), packed tuples, dtypes, and torchao's tensor subclasses (an int8 or
int4 payload plus scales inside one ``Tensor``). ``encode_state`` splits all of them into plain
tensors and a JSON description; nothing is ever pickled.

torchao subclasses are not rebuilt from the file: the model they load into is first given the same
quantized structure (``lowcarb.models.transforms.replay``), which creates subclass tensors of the
right type and shape, and ``load_state`` copies the saved payloads into them. So a file never
names a class to construct, and the subclass's own settings come from the replayed config.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, TypeGuard, cast

import torch
from torch import Tensor, nn

from lowcarb.errors import ModelError

__all__ = ["decode_state", "encode_state", "is_subclass_tensor", "load_state"]

_DTYPES = {
    str(d): d for d in (torch.qint8, torch.quint8, torch.qint32, torch.float16, torch.float32)
}


def is_subclass_tensor(value: Any) -> TypeGuard[Tensor]:
    """A wrapper tensor subclass (torchao's quantized weights), not a plain tensor or Parameter."""
    if not isinstance(value, Tensor):
        return False
    data = value.data if isinstance(value, nn.Parameter) else value
    return type(data) is not Tensor and hasattr(data, "__tensor_flatten__")


def subclass_parts(value: Tensor) -> tuple[Tensor, list[str]]:
    """The subclass tensor under a Parameter and the names of its inner tensors.

    ``__tensor_flatten__`` is defined by torchao's subclasses (see is_subclass_tensor), not by
    Tensor's stubs, hence the Any.
    """
    data = value.data if isinstance(value, nn.Parameter) else value
    attrs, _ = cast(Any, data).__tensor_flatten__()
    return data, list(attrs)


def _encode_qtensor(key: str, value: Tensor, tensors: dict[str, Tensor]) -> dict[str, Any]:
    tensors[f"{key}::int"] = value.int_repr().contiguous().clone()
    dtype = str(value.dtype).removeprefix("torch.")
    if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        tensors[f"{key}::scales"] = value.q_per_channel_scales().contiguous().clone()
        tensors[f"{key}::zero_points"] = value.q_per_channel_zero_points().contiguous().clone()
        return {"kind": "qtensor_per_channel", "dtype": dtype, "axis": int(value.q_per_channel_axis())}
    return {
        "kind": "qtensor_per_tensor",
        "dtype": dtype,
        "scale": float(value.q_scale()),
        "zero_point": int(value.q_zero_point()),
    }


def _encode(key: str, value: Any, tensors: dict[str, Tensor]) -> dict[str, Any]:
    if is_subclass_tensor(value):
        data, attrs = subclass_parts(value)
        return {
            "kind": "subclass",
            "type": type(data).__name__,
            "attrs": {a: _encode(f"{key}::{a}", getattr(data, a), tensors) for a in attrs},
        }
    if isinstance(value, Tensor):
        if value.is_quantized:
            return _encode_qtensor(key, value, tensors)
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"kind": "tensor"}
    if isinstance(value, (tuple, list)):
        return {
            "kind": "tuple" if isinstance(value, tuple) else "list",
            "items": [_encode(f"{key}::{i}", v, tensors) for i, v in enumerate(value)],
        }
    if value is None:
        return {"kind": "none"}
    if isinstance(value, torch.dtype):
        return {"kind": "dtype", "value": str(value)}
    if isinstance(value, (bool, int, float, str)):
        return {"kind": "scalar", "value": value}
    raise TypeError(f"cannot save state entry {key!r} of type {type(value).__name__}")


def _decode(key: str, spec: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> Any:
    kind = spec["kind"]
    if kind == "tensor":
        return tensors[key]
    if kind == "qtensor_per_channel":
        return torch._make_per_channel_quantized_tensor(
            tensors[f"{key}::int"], tensors[f"{key}::scales"], tensors[f"{key}::zero_points"],
            spec["axis"],
        )  # fmt: skip
    if kind == "qtensor_per_tensor":
        return torch._make_per_tensor_quantized_tensor(
            tensors[f"{key}::int"], spec["scale"], spec["zero_point"]
        )
    if kind in ("tuple", "list"):
        items = [_decode(f"{key}::{i}", s, tensors) for i, s in enumerate(spec["items"])]
        return tuple(items) if kind == "tuple" else items
    if kind == "none":
        return None
    if kind == "dtype":
        if spec["value"] not in _DTYPES:
            raise ModelError(f"unsupported dtype {spec['value']!r} in saved state entry {key!r}")
        return _DTYPES[spec["value"]]
    if kind == "scalar":
        return spec["value"]
    raise ModelError(f"unknown entry kind {kind!r} for {key!r}: the file was not written by lowcarb")


def encode_state(
    model: nn.Module,
) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, dict[str, Any]]]:
    """(plain tensors for safetensors, JSON entry per state key, the modules' state-dict versions,
    which tell torch.ao's loaders which layout the entries use)."""
    tensors: dict[str, Tensor] = {}
    state = model.state_dict(keep_vars=True)
    entries = {k: _encode(k, v, tensors) for k, v in state.items()}
    versions = {k: dict(v) for k, v in getattr(state, "_metadata", {}).items()}
    return tensors, entries, versions


def decode_state(
    entries: Mapping[str, Any], versions: Mapping[str, Any], tensors: Mapping[str, Tensor]
) -> OrderedDict[str, Any]:
    """The inverse of ``encode_state`` for every entry but torchao subclasses (``load_state``)."""
    state = OrderedDict(
        (k, _decode(k, spec, tensors)) for k, spec in entries.items() if spec["kind"] != "subclass"
    )
    state._metadata = OrderedDict((k, dict(v)) for k, v in versions.items())  # type: ignore[attr-defined]
    return state


def _copy_subclass(key: str, target: Any, spec: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> None:
    data = target.data if isinstance(target, nn.Parameter) else target
    if type(data).__name__ != spec["type"]:
        raise ModelError(
            f"state entry {key!r} was saved as {spec['type']} but the rebuilt model holds "
            f"{type(data).__name__} there: the transform log does not rebuild the saved structure"
        )
    for attr, inner in spec["attrs"].items():
        dest = getattr(data, attr)
        if inner["kind"] == "subclass":
            _copy_subclass(f"{key}::{attr}", dest, inner, tensors)
            continue
        source = _decode(f"{key}::{attr}", inner, tensors)
        if tuple(dest.shape) != tuple(source.shape):
            raise ModelError(
                f"state entry {key!r} ({attr}) has shape {tuple(source.shape)} in the file and "
                f"{tuple(dest.shape)} in the rebuilt model"
            )
        dest.copy_(source)


def load_state(
    model: nn.Module,
    entries: Mapping[str, Any],
    versions: Mapping[str, Any],
    tensors: Mapping[str, Tensor],
) -> None:
    """Load what ``encode_state`` wrote into ``model`` (already given the saved structure)."""
    state = decode_state(entries, versions, tensors)
    subclass_keys = {k for k, spec in entries.items() if spec["kind"] == "subclass"}
    missing, unexpected = model.load_state_dict(state, strict=False)
    left = sorted(set(missing) - subclass_keys)
    if left or unexpected:
        raise ModelError(
            f"the saved state does not fit the rebuilt model: missing {left[:5]}, unexpected "
            f"{list(unexpected)[:5]}"
        )
    if subclass_keys:
        current = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for key in sorted(subclass_keys):
                if key not in current:
                    raise ModelError(f"state entry {key!r} is not in the rebuilt model")
                _copy_subclass(key, current[key], entries[key], tensors)
