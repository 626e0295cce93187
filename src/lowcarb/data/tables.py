"""Text tables: `.tsv`, `.csv` and `.jsonl` files with a text column and a label column."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl")
TEXT_COLUMN_GUESSES = ("text", "sentence", "content")

# Some corpora have very long fields; the csv module's default limit (128 KiB) is too small.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class RawColumns:
    """Texts and raw (unmapped) labels read from one file, with where they came from."""

    texts: tuple[str, ...]
    labels: tuple[object, ...]
    source: str
    text_column: str
    label_column: str


def pick_text_column(columns: list[str], wanted: str | None, source: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(
                f"{source}: no text column {wanted!r}; columns are {columns}. "
                "Set data.text_column to one of them."
            )
        return wanted
    for guess in TEXT_COLUMN_GUESSES:
        if guess in columns:
            return guess
    raise ValueError(
        f"{source}: cannot tell which column holds the text (looked for {list(TEXT_COLUMN_GUESSES)}); "
        f"columns are {columns}. Set data.text_column."
    )


def check_label_column(columns: list[str], wanted: str, source: str) -> None:
    if wanted not in columns:
        raise ValueError(
            f"{source}: no label column {wanted!r}; columns are {columns}. "
            "Set data.label_column to one of them."
        )


def _read_delimited(path: Path, delimiter: str) -> tuple[list[str], list[dict[str, str]]]:
    # utf-8-sig: spreadsheet exports start with a byte-order mark that would otherwise become
    # part of the first column's name.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        # TSV corpora (GLUE) do not quote fields and contain bare quote characters.
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        reader = csv.DictReader(handle, delimiter=delimiter, quoting=quoting)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = columns
        rows = [row for row in reader if any((v or "").strip() for v in row.values() if isinstance(v, str))]
    return columns, rows


def _read_jsonl(path: Path) -> tuple[list[str], list[dict[str, object]]]:
    rows: list[dict[str, object]] = []
    columns: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: each line must be a JSON object, got {type(row).__name__}")
            for key in row:
                if key not in columns:
                    columns.append(key)
            rows.append(row)
    return columns, rows


def read_table(path: str | Path, text_column: str | None, label_column: str) -> RawColumns:
    """Read one table; errors name the file (and the column or line) and say what to change."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a .tsv, .csv or .jsonl file (or a datasets folder as data.train)")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {list(TABLE_SUFFIXES)}")
    try:
        if suffix == ".jsonl":
            columns, rows = _read_jsonl(path)
        else:
            columns, rows = _read_delimited(path, "\t" if suffix == ".tsv" else ",")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    if not rows:
        raise ValueError(f"{path}: the file has no data rows")
    text_col = pick_text_column(columns, text_column, str(path))
    check_label_column(columns, label_column, str(path))
    texts: list[str] = []
    labels: list[object] = []
    for i, row in enumerate(rows, start=2 if suffix != ".jsonl" else 1):
        text, label = row.get(text_col), row.get(label_column)
        if label is None or (isinstance(label, str) and not label.strip()):
            raise ValueError(f"{path}: row {i} has no value in label column {label_column!r}")
        if text is None:
            raise ValueError(f"{path}: row {i} has no value in text column {text_col!r}")
        texts.append(str(text).strip())
        labels.append(label)
    return RawColumns(tuple(texts), tuple(labels), str(path), text_col, label_column)
