"""Reading YAML a user (or anyone who sends them a file) wrote: bounded, strict, one-line errors.

`yaml.safe_load` never runs code, but it still lets a few hundred bytes ask for gigabytes:
aliases that repeat anchors that repeat anchors ("billion laughs") build a small graph that every
later step (validation, copying, printing an error) expands in full, and deep nesting overflows
Python's recursion limit. Here, before anything is built, one pass over the parser's events
counts the values the document expands to (aliases included) and its nesting depth, and refuses
documents over the limits with a message that names the line and prints none of the values.

Also: a key given twice in one mapping is an error (plain YAML keeps the last silently), and
numbers in exponent form without a dot (`3e-4`, `1e20`) are numbers (YAML 1.2), not strings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml import events
from yaml.constructor import ConstructorError

from lowcarb.errors import ConfigError

MAX_FILE_BYTES = 1 << 20  # recipes are a few KB; 1 MB leaves room for long descriptions
MAX_DEPTH = 32  # mappings and lists inside each other; recipes use 4 or 5
MAX_VALUES = 100_000  # scalars, mappings and lists, counting every alias as what it repeats

_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads `1e-3` as a number."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` then a key of its own is overriding, not repeating
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise ConstructorError(
                    None,
                    None,
                    f"key {_short(key)} appears twice (first on line {first.start_mark.line + 1}); "
                    "remove one of them",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789")
)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _line(event: events.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}" if mark is not None else "somewhere"


def _check_size(text: str, source: str) -> None:
    """One pass over the parser's events: nesting depth and expanded size, before building."""
    try:
        loader = StrictLoader(text)  # the reader refuses control characters here already
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    try:
        depth, total = 0, 0
        open_nodes: list[tuple[str | None, int]] = []  # (anchor, values counted before it)
        sizes: dict[str, int] = {}  # anchor -> values it expands to
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, (events.MappingStartEvent, events.SequenceStartEvent)):
                depth, total = depth + 1, total + 1
                if depth > MAX_DEPTH:
                    raise ConfigError(
                        f"{source}: nested more than {MAX_DEPTH} levels deep ({_line(event)}); "
                        "a recipe is a few levels of mappings and lists"
                    )
                open_nodes.append((event.anchor, total))
            elif isinstance(event, (events.MappingEndEvent, events.SequenceEndEvent)):
                depth -= 1
                anchor, before = open_nodes.pop()
                if anchor is not None:
                    sizes[anchor] = total - before + 1
            elif isinstance(event, events.ScalarEvent):
                total += 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, events.AliasEvent):
                if any(anchor == event.anchor for anchor, _ in open_nodes):
                    raise ConfigError(
                        f"{source}: alias *{event.anchor} ({_line(event)}) refers to itself "
                        "(it sits inside its own anchor); a recipe cannot be recursive"
                    )
                total += sizes.get(event.anchor, 1)  # an unknown anchor: the composer says so
            if total > MAX_VALUES:
                raise ConfigError(
                    f"{source}: expands to more than {MAX_VALUES:,} values by {_line(event)}; "
                    "aliases (*name) repeat what their anchors (&name) hold, and anchors that "
                    "repeat other anchors multiply; write the values out or use fewer aliases"
                )
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    finally:
        loader.dispose()


def _yaml_error(exc: yaml.YAMLError, source: str) -> ConfigError:
    where = ""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        where = f" (line {mark.line + 1}, column {mark.column + 1})"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ConfigError(f"{source}: not valid YAML{where}: {problem}")


def load_yaml_text(text: str, source: str) -> Any:
    """Parse one YAML document within the limits; errors are one-line ConfigErrors."""
    _check_size(text, source)
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None


def load_yaml_file(path: str | Path, what: str = "recipe") -> Any:
    """Read and parse a YAML file of at most MAX_FILE_BYTES; errors name the file."""
    path = Path(path)
    try:
        if not path.exists():
            raise ConfigError(f"{path}: {what} file not found; give the path to a .yaml {what}")
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder; give the path to a .yaml {what} file")
        if not path.is_file():
            raise ConfigError(f"{path}: not a regular file (a device or a pipe); give a .yaml {what} file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                f"{path}: the file is {size / 1e6:.1f} MB; a {what} is at most "
                f"{MAX_FILE_BYTES / 1e6:.0f} MB of YAML (is it the right file?)"
            )
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{path}: cannot read the {what}: {reason}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: more than {MAX_FILE_BYTES / 1e6:.0f} MB; a {what} is at most that")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; a {what} is UTF-8 YAML") from None
    return load_yaml_text(text, str(path))
