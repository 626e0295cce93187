"""Exact types for the numbers and switches of a recipe, checked before pydantic coerces them.

Pydantic's lax mode turns `epochs: true` into 1, `epochs: 1e20` into a 21-digit integer and
`epochs: 2.5` into an error only sometimes; `lr: .inf` passes `lr > 0`. None of those is what a
user meant, so wherever a setting is declared `int`, `bool` or `float` (in the library's configs
and in every stage's settings), the raw value must be exactly that kind: an integer for an int
(not a boolean, not a float), true/false for a bool, a finite number for a float.

The check reads the type hints of the config classes, so a new field or a new stage is covered
without an edit here; everything else (ranges, strings, paths, literals) is left to pydantic and to
the configs' own checks.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel


def _hints(cls: Any) -> dict[str, Any]:
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return {name: f.annotation for name, f in cls.model_fields.items()}
    if dataclasses.is_dataclass(cls):
        return typing.get_type_hints(cls, include_extras=False)
    return {}


def _is_config(hint: Any) -> bool:
    return isinstance(hint, type) and (issubclass(hint, BaseModel) or dataclasses.is_dataclass(hint))


def _strip_annotated(hint: Any) -> Any:
    while typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    return hint


def _scalar_problem(value: Any, hint: Any) -> str | None:
    """Why `value` is not of the plain kind `hint` (int, bool, float); None when it is."""
    if hint is bool:
        return None if isinstance(value, bool) else "expected true or false"
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return None
        return "expected an integer (a whole number)"
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return "expected a number"
        try:
            number = float(value)
        except ValueError:
            return None  # not a number at all: pydantic says so in its own words
        return None if math.isfinite(number) else "expected a finite number"
    return None


def type_problems(value: Any, hint: Any, where: str) -> list[str]:
    """`field: problem, got VALUE` for each value in `value` that is not of its declared kind."""
    hint = _strip_annotated(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return []
        if any(_strip_annotated(o) in (str, Any) for o in options):
            return []  # a string is accepted: anything else is pydantic's to judge
        found = [type_problems(value, option, where) for option in options]
        return [] if any(not f for f in found) else found[0]
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if not args:
            return []
        out: list[str] = []
        for index, item in enumerate(value):
            element = args[0] if len(args) == 1 else args[min(index, len(args) - 1)]
            out += type_problems(item, element, f"{where}[{index}]")
        return out
    if _is_config(hint) and isinstance(value, Mapping):
        return section_problems(value, hint, where)
    problem = _scalar_problem(value, hint)
    return [] if problem is None else [f"{where}: {problem}, got {_shown(value)}"]


def section_problems(raw: Mapping[str, Any], cls: Any, prefix: str = "") -> list[str]:
    """Problems of the known fields of `raw` against the config class `cls` (unknown keys are
    left to pydantic, which names them and suggests the closest field)."""
    hints = _hints(cls)
    out: list[str] = []
    for key, value in raw.items():
        if isinstance(key, str) and key in hints:
            out += type_problems(value, hints[key], f"{prefix}.{key}" if prefix else key)
    return out


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
