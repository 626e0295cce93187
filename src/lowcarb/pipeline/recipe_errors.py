"""Recipe error messages: one line per problem, named by field, values shortened.

Pydantic's own messages name union branches (`model.name.lax-or-strict[...]`) and print whole
inputs; a user needs the field as they wrote it and a value short enough to read, even when the
value came from a file built to be huge.
"""

from __future__ import annotations

import dataclasses
import difflib
import reprlib
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 60, 60, 6, 6, 3


def short_repr(value: Any) -> str:
    """A short repr for messages: a huge or alias-expanded value must not flood the terminal."""
    return _REPR.repr(value)


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _real_loc(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The field path of a pydantic error location, without the union branches pydantic adds
    (`model.name.lax-or-strict[...]` is `model.name`); list indices are written `[i]`."""
    out: list[str] = []
    current: Any = model  # the config class at this point; None past a plain field
    for part in loc:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif current is not None and part in _field_names(current):
            out.append(str(part))
            current = _field_type(current, str(part))
        # else: past a plain field, the parts are union branches or type tags, not fields
    text = ".".join(out).replace(".[", "[")
    return [text] if text else []


def _field_type(cls: Any, name: str) -> Any:
    """The config class of field `name` of `cls`, for walking nested sections (None if none)."""
    if dataclasses.is_dataclass(cls):
        hint = typing.get_type_hints(cls).get(name)
    else:
        field = (getattr(cls, "model_fields", None) or {}).get(name)
        hint = field.annotation if field is not None else None
    return _config_in(hint)


def _config_in(hint: Any, depth: int = 0) -> Any:
    """The config class a type hint holds: itself, or inside `X | None`, `list[X]` or
    `dict[str, X]` (one level of each is enough for recipes); None if there is none."""
    if isinstance(hint, type) and (dataclasses.is_dataclass(hint) or issubclass(hint, BaseModel)):
        return hint
    if depth > 3:
        return None
    for arg in typing.get_args(hint):
        found = _config_in(arg, depth + 1)
        if found is not None:
            return found
    return None


def format_validation_errors(
    exc: ValidationError,
    source: str,
    model: type[BaseModel],
    set_paths: list[tuple[str, ...]],
    prefix: str = "",
) -> str:
    lines: dict[str, str] = {}  # one message per field: union branches repeat the same field
    for err in exc.errors():
        raw_loc = list(err["loc"])
        unknown = err["type"] in ("extra_forbidden", "unexpected_keyword_argument")
        # An unknown field is not in the model: keep its name as given.
        tail = [str(raw_loc.pop())] if unknown and raw_loc else []
        if raw_loc[:1] == ["stages"] and len(raw_loc) > 1:
            loc = [f"stages[{raw_loc[1]}]", *_real_loc(model, raw_loc[2:]), *tail]
        else:
            loc = [".".join([*_real_loc(model, raw_loc), *tail])]
        loc = [part for part in loc if part]
        field = ".".join([prefix, *loc] if prefix else loc) or "(top level)"
        if field in lines:
            continue
        if unknown:
            allowed = _fields_at(model, list(err["loc"][:-1]))
            hint = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
            msg = "unknown field"
            if hint:
                msg += f" (did you mean {hint[0]!r}?)"
            if allowed:
                msg += f"; allowed: {', '.join(allowed)}"
        elif err["type"] == "value_error":
            # A config's own check (__post_init__): its message already names the field.
            msg = str(err["msg"]).removeprefix("Value error, ")
        elif err.get("input", ...) is None:
            msg = "needs a value, got nothing (null)"
        else:
            msg = err["msg"]
            if "input" in err and err["type"] != "missing":
                msg += f" (got {short_repr(err['input'])})"
        from_set = any(".".join(p) == ".".join(str(x) for x in err["loc"][: len(p)]) for p in set_paths)
        lines[field] = f"{field}: {shorten(msg, 300)}" + (" [from --set]" if from_set else "")
    # A list whose items failed also reports itself ("at least 1 item after validation"): the
    # items' messages say it better.
    shown = [m for f, m in lines.items() if not any(g.startswith(f + "[") for g in lines)]
    return f"{source}: " + "; ".join(shown)


def mark_set(problems: list[str], set_paths: list[tuple[str, ...]]) -> list[str]:
    """Append ` [from --set]` to the problems of fields a --set override gave."""
    given = [".".join(p) for p in set_paths]
    return [
        p + (" [from --set]" if any(p.split(":")[0].split("[")[0] == g for g in given) else "")
        for p in problems
    ]


def _field_names(cls: Any) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    # A field with an alias (`float_` written `float:`) is named as a recipe writes it.
    fields = getattr(cls, "model_fields", None) or {}
    return [field.alias or name for name, field in fields.items()]


def _fields_at(model: type[BaseModel], loc: list[Any]) -> list[str]:
    """Field names of the nested config (pydantic model or dataclass) at `loc`, for hints. The
    walk goes through optional sections (`parsec:`, `search:`, `mutransfer:`), list items
    (`objectives[0]`) and mapping values (`params.train.lr`): a part that names no field (a list
    index, a mapping key, a union branch pydantic adds) keeps the walk where it is."""
    current: Any = model
    for part in loc:
        if isinstance(part, str) and part in _field_names(current):
            current = _field_type(current, part)
            if current is None:
                return []
    return _field_names(current)
