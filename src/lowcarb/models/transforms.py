"""The transform log: every transform's one summary type, the ordered log of typed configs a model
carries, and the table that replays the log on a freshly built model.

Every transform has the same shape (as torchao's ``quantize_(model, config)``)::

    summary = lowrank.apply(model, LowRankConfig(param_ratio=0.5))   # -> TransformSummary
    transform_log(model)        # (TransformRecord(LowRankConfig(...), {"ranks": {...}}),)

and records what it did with ``record(model, config, structure)``. The log is a plain attribute of
the model (``model.lowcarb_transforms``): a ``torch.nn.Module`` stays a plain module, and
``copy.deepcopy`` copies the log with it. ``structure`` is the JSON-able part of the result that
the config alone does not determine (the ranks a parameter budget chose, the widths a ticket kept,
the quantization backend), written at apply time, when it can still be read off the model.

Reloading (``lowcarb.compress.saved``) builds the base model again and calls ``replay`` on it: each
record, in the order it was applied, goes to the replay function registered for its config type
(``register_transform``), which gives the fresh model the transformed structure; the saved tensors
are loaded afterwards. The saved form of a record names its transform and the module that
registers it, so loading imports only ``lowcarb`` modules, never a name taken from a file blindly.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lowcarb.errors import ModelError

__all__ = [
    "LOG_ATTR",
    "TransformRecord",
    "TransformSummary",
    "carry_log",
    "config_from_json",
    "config_to_json",
    "dataclass_from_json",
    "forget",
    "has_transforms",
    "record",
    "record_from_json",
    "record_to_json",
    "register_transform",
    "replace_structure",
    "replay",
    "transform_log",
]

LOG_ATTR = "lowcarb_transforms"

Replay = Callable[[nn.Module, Any, dict[str, Any]], nn.Module]


@dataclass
class TransformSummary:
    """What every transform returns.

    transform: the registered name (``"lowrank"``, ``"dynamic_int8"``, ...); config: the typed
    config applied; details: what this transform adds (ranks, bytes, backend, ...), flattened into
    ``to_dict()`` so a stage notes them next to the common fields; model: the transformed model
    (the same object, unless the transform had to build a new one, as static int8 does).
    """

    transform: str
    config: Any
    params_before: int
    params_after: int
    modules_changed: list[str]
    details: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def __getitem__(self, key: str) -> Any:
        return self.details[key]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "transform": self.transform,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "modules_changed": list(self.modules_changed),
            "config": config_to_json(self.config),
        }
        out.update(self.details)
        return out


@dataclass(frozen=True)
class TransformRecord:
    """One applied transform: its typed config and the structure needed to rebuild it."""

    config: Any
    structure: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Kind:
    name: str
    config_type: type
    replay: Replay
    to_json: Callable[[Any], dict[str, Any]]
    from_json: Callable[[dict[str, Any]], Any]


_BY_TYPE: dict[type, _Kind] = {}
_BY_NAME: dict[str, _Kind] = {}


def register_transform(
    config_type: type,
    name: str,
    replay: Replay,
    *,
    to_json: Callable[[Any], dict[str, Any]] | None = None,
    from_json: Callable[[dict[str, Any]], Any] | None = None,
) -> None:
    """Make ``config_type`` a transform: ``replay(fresh_model, config, structure) -> model`` gives a
    freshly built model the structure the transform produced (weights are loaded after).
    ``to_json`` / ``from_json`` default to the dataclass fields, validated back by pydantic."""
    existing = _BY_NAME.get(name)
    if existing is not None and existing.config_type.__qualname__ != config_type.__qualname__:
        raise ValueError(f"transform name {name!r} is taken by {existing.config_type.__name__}")
    kind = _Kind(
        name,
        config_type,
        replay,
        to_json or _dataclass_to_json,
        from_json or (lambda data: dataclass_from_json(config_type, data)),
    )
    _BY_TYPE[config_type] = kind
    _BY_NAME[name] = kind


def _kind_of(config: Any) -> _Kind:
    kind = _BY_TYPE.get(type(config))
    if kind is None:
        raise TypeError(
            f"{type(config).__name__} is not a registered transform config "
            "(lowcarb.models.transforms.register_transform)"
        )
    return kind


def _dataclass_to_json(config: Any) -> dict[str, Any]:
    return _jsonable(dataclasses.asdict(config))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def dataclass_from_json(config_type: type, data: dict[str, Any]) -> Any:
    """A config dataclass back from its JSON fields, validated by pydantic (the default
    ``from_json``; a transform's own ``from_json`` may rename old keys first and call this)."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(config_type).validate_python(data)
    except ValidationError as exc:
        raise ModelError(
            f"saved {config_type.__name__} does not validate ({exc.errors()[0]['msg']}); "
            "was the file written by another lowcarb version or edited?"
        ) from exc


def config_to_json(config: Any) -> Any:
    """The JSON form of a registered config (other values are passed through as they are)."""
    kind = _BY_TYPE.get(type(config))
    if kind is None:
        return _dataclass_to_json(config) if dataclasses.is_dataclass(config) else config
    return kind.to_json(config)


def config_from_json(name: str, data: dict[str, Any]) -> Any:
    return _lookup(name).from_json(data)


def _lookup(name: str, module: str | None = None) -> _Kind:
    if name not in _BY_NAME and module:
        # The module that registers the transform; only lowcarb's own are imported from a file.
        if not module.startswith("lowcarb."):
            raise ModelError(f"transform {name!r} names module {module!r}, outside lowcarb")
        importlib.import_module(module)
    kind = _BY_NAME.get(name)
    if kind is None:
        raise ModelError(
            f"unknown transform {name!r} in a saved model; known: {sorted(_BY_NAME) or 'none'}"
        )
    return kind


# ---------------------------------------------------------------------------------------------
# the log on the model
# ---------------------------------------------------------------------------------------------


def transform_log(model: nn.Module) -> tuple[TransformRecord, ...]:
    return tuple(getattr(model, LOG_ATTR, ()))


def has_transforms(model: nn.Module) -> bool:
    return bool(getattr(model, LOG_ATTR, ()))


def record(model: nn.Module, config: Any, structure: dict[str, Any] | None = None) -> None:
    """Append ``config`` (a registered type) to the model's log."""
    _kind_of(config)
    # A plain attribute: nn.Module keeps non-tensor, non-module values in __dict__.
    object.__setattr__(model, LOG_ATTR, [*transform_log(model), TransformRecord(config, structure or {})])


def forget(model: nn.Module, config_type: type) -> None:
    """Drop every record of ``config_type`` (a transform undone, e.g. LoRA merged and unloaded)."""
    kept = [r for r in transform_log(model) if not isinstance(r.config, config_type)]
    object.__setattr__(model, LOG_ATTR, kept)


def replace_structure(model: nn.Module, config_type: type, **changes: Any) -> None:
    """Update the structure of the latest record of ``config_type`` (e.g. LoRA merged in place)."""
    log = list(transform_log(model))
    for i in range(len(log) - 1, -1, -1):
        if isinstance(log[i].config, config_type):
            log[i] = TransformRecord(log[i].config, {**log[i].structure, **changes})
            object.__setattr__(model, LOG_ATTR, log)
            return
    raise ValueError(f"the model's transform log has no {config_type.__name__}")


def carry_log(source: nn.Module, target: nn.Module) -> nn.Module:
    """Give ``target`` (a module built from ``source``, e.g. a traced copy) ``source``'s log."""
    if target is not source:
        object.__setattr__(target, LOG_ATTR, list(transform_log(source)))
    return target


def record_to_json(entry: TransformRecord) -> dict[str, Any]:
    kind = _kind_of(entry.config)
    return {
        "transform": kind.name,
        "module": kind.config_type.__module__,
        "config": kind.to_json(entry.config),
        "structure": _jsonable(entry.structure),
    }


def record_from_json(data: dict[str, Any]) -> TransformRecord:
    try:
        kind = _lookup(data["transform"], data.get("module"))
        return TransformRecord(kind.from_json(data["config"]), dict(data.get("structure") or {}))
    except (KeyError, TypeError) as exc:
        raise ModelError(f"not a transform record ({exc}): {str(data)[:200]}") from exc


def replay(model: nn.Module, log: tuple[TransformRecord, ...] | list[TransformRecord]) -> nn.Module:
    """Give a freshly built ``model`` the structure of every record, in order; returns the model
    (a new module when a replay must build one) with the log attached."""
    done: list[TransformRecord] = []
    for entry in log:
        model = _kind_of(entry.config).replay(model, entry.config, entry.structure)
        done.append(entry)
        # The log is exactly what was replayed, whatever a replay function recorded itself.
        object.__setattr__(model, LOG_ATTR, list(done))
    return model
