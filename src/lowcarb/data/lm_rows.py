"""Rows of language-model data, read from files with errors that name the file, line and field.

Three kinds of rows (one kind per file):

- `{"prompt": ..., "response": ...}` (JSONL, or CSV/TSV with prompt and response columns), with
  an optional `"system"` instruction: the model learns the response; the prompt is context (no
  loss on it).
- `{"messages": [{"role": "system" | "user" | "assistant", "content": ...}, ...]}` (JSONL): a
  conversation rendered with the tokenizer's chat template; the model learns the assistant turns.
- plain text: a `.txt` file (one document per non-empty line) or a text column (JSONL key or
  CSV/TSV column `text`, or `data.text_column`): continued pre-training, loss on every token.

Keys other than these are ignored (an `id` or a `source` field is common in instruction sets).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowcarb.data.jsonl import json_objects
from lowcarb.errors import DataError

LM_SUFFIXES = (".jsonl", ".txt", ".csv", ".tsv")
ROLES = ("system", "user", "assistant", "tool")
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class PromptResponse:
    prompt: str
    response: str
    where: str = ""  # "file:line", for messages about this row
    # An optional instruction: the system turn of the chat template (it then replaces a
    # template's default system prompt), or a line before the prompt in the plain format.
    system: str | None = None


@dataclass(frozen=True)
class Chat:
    messages: tuple[tuple[str, str], ...]  # (role, content), in order
    where: str = ""

    @property
    def reference(self) -> str | None:
        """The last message when it is the assistant's: what greedy generation should produce."""
        role, content = self.messages[-1]
        return content if role == "assistant" else None


@dataclass(frozen=True)
class PlainText:
    text: str
    where: str = ""


LMRow = PromptResponse | Chat | PlainText


@dataclass(frozen=True)
class LMSplit:
    """The rows of one split and the file they came from."""

    rows: tuple[LMRow, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, indices: Sequence[int]) -> LMSplit:
        return LMSplit(tuple(self.rows[i] for i in indices), self.source)

    @property
    def kind(self) -> str:
        return row_kind(self.rows[0]) if self.rows else "empty"


def row_kind(row: LMRow) -> str:
    if isinstance(row, PromptResponse):
        return "prompt/response"
    if isinstance(row, Chat):
        return "messages"
    return "text"


def read_lm_file(path: str | Path, text_column: str | None = None) -> LMSplit:
    """Every row of a `.jsonl`, `.txt`, `.csv` or `.tsv` file, checked; DataError on a bad row."""
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not found"
        raise DataError(f"{path}: {what}; causal-lm data is a .jsonl, .txt, .csv or .tsv file")
    suffix = path.suffix.lower()
    if suffix not in LM_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'!r} for causal-lm data; use "
            ".jsonl ({prompt, response} or {messages}), .txt (one text per line), .csv or .tsv"
        )
    try:
        if suffix == ".jsonl":
            rows = list(_jsonl_rows(path, text_column))
        elif suffix == ".txt":
            rows = list(_txt_rows(path))
        else:
            rows = list(_table_rows(path, "\t" if suffix == ".tsv" else ",", text_column))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not rows:
        raise DataError(f"{path}: no rows; the file is empty")
    _check_one_kind(rows, path)
    return LMSplit(tuple(rows), str(path))


def _check_one_kind(rows: list[LMRow], path: Path) -> None:
    first = row_kind(rows[0])
    for row in rows[1:]:
        if row_kind(row) != first:
            raise DataError(
                f"{row.where}: a {row_kind(row)} row in a file of {first} rows ({rows[0].where}); "
                f"use one kind of row per file"
            )


def _jsonl_rows(path: Path, text_column: str | None) -> Iterator[LMRow]:
    for number, obj in json_objects(path):
        yield row_from_mapping(obj, f"{path}:{number}", text_column)


def row_from_mapping(obj: dict[str, Any], where: str, text_column: str | None = None) -> LMRow:
    """One row from a JSON object (or a table row): messages, prompt/response, or text."""
    if "messages" in obj:
        return Chat(_messages(obj["messages"], where), where)
    if "prompt" in obj or "response" in obj:
        prompt = _string_field(obj, "prompt", where, allow_empty=True)
        system = _string_field(obj, "system", where) if obj.get("system") is not None else None
        return PromptResponse(prompt, _string_field(obj, "response", where), where, system)
    column = text_column or "text"
    if column in obj:
        return PlainText(_string_field(obj, column, where), where)
    raise DataError(
        f"{where}: no 'messages', no 'prompt'/'response' and no {column!r} field (keys: "
        f"{sorted(obj)}); write {{\"prompt\": ..., \"response\": ...}}, {{\"messages\": [...]}} "
        "or set data.text_column"
    )


def _string_field(obj: dict[str, Any], name: str, where: str, *, allow_empty: bool = False) -> str:
    if name not in obj:
        raise DataError(f"{where}: field {name!r} is missing")
    value = obj[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} must be a string, got {_json_type(value)}")
    if not allow_empty and not value.strip():
        raise DataError(f"{where}: field {name!r} is empty")
    return value


def _messages(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field 'messages' must be a non-empty list, got {_json_type(value)}")
    out = []
    for index, message in enumerate(value):
        field = f"messages[{index}]"
        if not isinstance(message, dict):
            raise DataError(f"{where}: field {field!r} must be an object with role and content")
        role = message.get("role")
        if role not in ROLES:
            raise DataError(f"{where}: field '{field}.role' must be one of {list(ROLES)}, got {role!r}")
        content = message.get("content")
        if not isinstance(content, str):
            raise DataError(
                f"{where}: field '{field}.content' must be a string, got {_json_type(content)}"
            )
        out.append((role, content))
    if not any(role == "assistant" for role, _ in out):
        raise DataError(f"{where}: field 'messages' has no assistant message, so nothing to learn")
    if out[0][0] == "assistant":
        raise DataError(f"{where}: field 'messages[0]' is the assistant's; a conversation starts with a prompt")
    return tuple(out)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _txt_rows(path: Path) -> Iterator[LMRow]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\r\n")
            if text.strip():
                yield PlainText(text, f"{path}:{number}")


def _table_rows(path: Path, delimiter: str, text_column: str | None) -> Iterator[LMRow]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = list(reader.fieldnames or [])
        if not columns:
            return
        wanted = {"prompt", "response"} if {"prompt", "response"} <= set(columns) else {text_column or "text"}
        missing = sorted(wanted - set(columns))
        if missing:
            raise DataError(
                f"{path}: no column {missing[0]!r} (columns: {columns}); a table for causal-lm has "
                "prompt and response columns, or a text column (data.text_column)"
            )
        for record in reader:
            where = f"{path}:{reader.line_num}"  # the physical line (quoted fields may span lines)
            if None in record or any(record.get(c) is None for c in wanted):
                raise DataError(f"{where}: {len(columns)} columns expected, the row has a different number")
            yield row_from_mapping({k: record[k] for k in wanted}, where, text_column)
