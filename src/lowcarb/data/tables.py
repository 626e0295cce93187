"""Text tables: `.tsv`, `.csv` and `.jsonl` files with a text column and a label column.

Checked as they are read, each problem a `DataError` naming the file and the line: a header with
the same column twice, a row with more fields than the header (a comma left unquoted), a row
without a label (empty, NaN, null), broken quoting. A user who means some of it (a column of
notes after the label, unlabelled rows mixed in) says so with `data.allow_extra_fields` or
`data.drop_unlabelled`, and gets a warning instead.

CSV and TSV are read with the csv module's standard quoting (as Python's csv and pandas write them:
a text with a line break or a tab in quotes, quotes inside written `""`). A TSV that is not quoted
(GLUE's, where a text may start with a bare quote) fails that reading and is read again with
quotes as plain text.
"""

from __future__ import annotations

import csv
import math
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lowcarb.data.jsonl import json_objects
from lowcarb.errors import DataError, LowcarbWarning, MissingPathError

TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl")
TEXT_COLUMN_GUESSES = ("text", "sentence", "content")

# Some corpora have very long fields; the csv module's default limit (128 KiB) is too small.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class RawColumns:
    """Texts and raw (unmapped) labels read from one file, with where they came from.

    `lines[i]` is the line of the file where example i starts (empty when the source has none).
    """

    texts: tuple[str, ...]
    labels: tuple[object, ...]
    source: str
    text_column: str
    label_column: str
    lines: tuple[int, ...] = ()

    def where(self, index: int) -> str:
        """`file:line` of example `index` (or `file, example N` without line numbers)."""
        if index < len(self.lines):
            return f"{self.source}:{self.lines[index]}"
        return f"{self.source}, example {index + 1}"


@dataclass(frozen=True)
class TableChecks:
    """What a user may allow in a table instead of it being an error (each gives a warning)."""

    allow_extra_fields: bool = False
    drop_unlabelled: bool = False


def is_missing_label(value: object) -> bool:
    """Empty, whitespace, null, NaN or the text "nan" (how pandas writes a missing value)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        text = value.strip()
        return not text or text.lower() == "nan"
    return False


def pick_text_column(columns: list[str], wanted: str | None, source: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise DataError(
                f"{source}: no text column {wanted!r}; columns are {columns}. "
                "Set data.text_column to one of them."
            )
        return wanted
    for guess in TEXT_COLUMN_GUESSES:
        if guess in columns:
            return guess
    raise DataError(
        f"{source}: cannot tell which column holds the text (looked for {list(TEXT_COLUMN_GUESSES)}); "
        f"columns are {columns}. Set data.text_column."
    )


def check_label_column(columns: list[str], wanted: str, source: str) -> None:
    if wanted not in columns:
        raise DataError(
            f"{source}: no label column {wanted!r}; columns are {columns}. "
            "Set data.label_column to one of them."
        )


# A row: (line where it starts, values by column name, number of fields beyond the header).
Row = tuple[int, dict[str, Any], int]


class _QuotingError(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line, self.reason = line, reason


# csv's quoting constants (QUOTE_MINIMAL, QUOTE_ALL, QUOTE_NONNUMERIC, QUOTE_NONE).
Quoting = Literal[0, 1, 2, 3]


def _records(path: Path, delimiter: str, quoting: Quoting) -> Iterator[tuple[int, list[str]]]:
    """(start line, fields) per record; strict quoting raises _QuotingError with the line."""
    # utf-8-sig: spreadsheet exports start with a byte-order mark that would otherwise become
    # part of the first column's name.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting, strict=quoting != csv.QUOTE_NONE)
        start = 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise _QuotingError(start, str(exc)) from None
            yield start, fields
            start = reader.line_num + 1


def _parse_delimited(path: Path, delimiter: str, quoting: Quoting) -> tuple[list[str], list[Row]]:
    records = _records(path, delimiter, quoting)
    first = next(records, None)
    if first is None:
        return [], []
    columns = [c.strip() for c in first[1]]
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise DataError(
                f"{path}:1: column {name!r} appears twice in the header; rename one of them "
                f"(columns: {columns})"
            )
        seen.add(name)
    rows: list[Row] = []
    for line, fields in records:
        if not any(f.strip() for f in fields):
            continue  # a blank line
        values: dict[str, Any] = dict(zip(columns, fields, strict=False))
        for name in columns[len(fields) :]:
            values[name] = None
        rows.append((line, values, max(0, len(fields) - len(columns))))
    return columns, rows


def _read_delimited(path: Path, delimiter: str) -> tuple[list[str], list[Row]]:
    try:
        return _parse_delimited(path, delimiter, csv.QUOTE_MINIMAL)
    except _QuotingError as exc:
        if delimiter == "\t":
            # Not a quoted TSV: GLUE-style, where a quote is part of the text.
            return _parse_delimited(path, delimiter, csv.QUOTE_NONE)
        raise DataError(
            f"{path}: line {exc.line}: broken quoting ({exc.reason}); a field that starts with a "
            'quote must end with one, and quotes inside it are written twice ("")'
        ) from None


def _read_jsonl(path: Path) -> tuple[list[str], list[Row]]:
    rows: list[Row] = []
    columns: list[str] = []
    for line_no, row in json_objects(path):
        for key in row:
            if key not in columns:
                columns.append(key)
        rows.append((line_no, row, 0))
    return columns, rows


def _lines_text(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:5])
    return shown + (f", ... ({len(lines)} in all)" if len(lines) > 5 else "")


def read_table(
    path: str | Path,
    text_column: str | None,
    label_column: str,
    checks: TableChecks = TableChecks(),  # noqa: B008 - a frozen value
) -> RawColumns:
    """Read one table; errors name the file (and the column or line) and say what to change."""
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"data file not found: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a .tsv, .csv or .jsonl file (or a datasets folder as data.train)")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {list(TABLE_SUFFIXES)}")
    try:
        if suffix == ".jsonl":
            columns, rows = _read_jsonl(path)
        else:
            columns, rows = _read_delimited(path, "\t" if suffix == ".tsv" else ",")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not rows:
        raise DataError(f"{path}: the file has no data rows")
    text_col = pick_text_column(columns, text_column, str(path))
    check_label_column(columns, label_column, str(path))
    _check_extra_fields(path, rows, len(columns), checks)
    texts: list[str] = []
    labels: list[object] = []
    lines: list[int] = []
    unlabelled: list[int] = []
    for line, row, _extra in rows:
        text, label = row.get(text_col), row.get(label_column)
        if is_missing_label(label):
            if not checks.drop_unlabelled:
                raise DataError(
                    f"{path}:{line}: no label in column {label_column!r} (empty, null or NaN); "
                    "fix the row, or set data.drop_unlabelled: true to skip unlabelled rows"
                )
            unlabelled.append(line)
            continue
        if text is None:
            raise DataError(f"{path}:{line}: no value in text column {text_col!r}")
        texts.append(str(text).strip())
        labels.append(label)
        lines.append(line)
    if unlabelled:
        warnings.warn(
            f"{path}: dropped {len(unlabelled)} rows without a label (lines {_lines_text(unlabelled)})",
            LowcarbWarning,
            stacklevel=2,
        )
    if not texts:
        raise DataError(f"{path}: no row has a label in column {label_column!r}")
    return RawColumns(tuple(texts), tuple(labels), str(path), text_col, label_column, tuple(lines))


def _check_extra_fields(path: Path, rows: list[Row], width: int, checks: TableChecks) -> None:
    extra = [line for line, _, more in rows if more]
    if not extra:
        return
    first = next(r for r in rows if r[2])
    if not checks.allow_extra_fields:
        raise DataError(
            f"{path}:{first[0]}: {width + first[2]} fields, the header has {width}; quote texts "
            "that contain the delimiter, or set data.allow_extra_fields: true to ignore fields "
            "beyond the header"
        )
    count = f"{len(extra)} row has" if len(extra) == 1 else f"{len(extra)} rows have"
    warnings.warn(
        f"{path}: {count} more fields than the header (line{'s' if len(extra) > 1 else ''} "
        f"{_lines_text(extra)}); the extra fields are ignored (data.allow_extra_fields)",
        LowcarbWarning,
        stacklevel=2,
    )
