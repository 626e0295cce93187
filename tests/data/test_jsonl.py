"""JSON Lines, read the same way for classification tables and causal-LM text."""

import pytest

from lowcarb.data.jsonl import json_objects
from lowcarb.data.tables import read_table
from lowcarb.errors import DataError


def test_objects_with_their_line_numbers_blank_lines_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n  \n{"text": "b", "label": 0}\n', encoding="utf-8")
    assert list(json_objects(path)) == [(1, {"text": "a", "label": 1}), (4, {"text": "b", "label": 0})]


def test_a_byte_order_mark_does_not_break_the_first_line(tmp_path):
    # Editors on Windows write one; the classification reader used to fail on it.
    path = tmp_path / "bom.jsonl"
    path.write_bytes("\ufeff".encode() + b'{"text": "hi", "label": "pos"}\n{"text": "yo", "label": "neg"}\n')
    assert [n for n, _ in json_objects(path)] == [1, 2]
    table = read_table(path, "text", "label")
    assert table.texts == ("hi", "yo") and table.labels == ("pos", "neg")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"bad.jsonl:2: not valid JSON \(.* at column 2\)"),
        ('["a list"]', r"bad.jsonl:2: expected a JSON object, got list"),
        ("3", r"bad.jsonl:2: expected a JSON object, got int"),
    ],
)
def test_a_bad_line_is_a_data_error_naming_it(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        list(json_objects(path))
    with pytest.raises(DataError, match=message):  # the classification reader says the same
        read_table(path, "text", "label")
