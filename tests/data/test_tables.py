import json

import pytest

from lowcarb.data import DataConfig, load_data
from lowcarb.models import ByteTokenizer


def write_tsv(path, rows, header="text\tlabel"):
    path.write_text(header + "\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows))
    return path


ROWS = [(f"sample {i} {'good' if i % 2 else 'bad'}", i % 2) for i in range(40)]


def test_tsv_with_seeded_dev_and_test_split(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", ROWS)
    data = load_data(DataConfig(train=path, dev_fraction=0.2, test_fraction=0.1, seed=3))
    sizes = data.sizes()
    assert sizes == {"train": 28, "dev": 8, "test": 4}
    assert data.kind == "text" and data.num_labels == 2
    all_texts = set(data.train.texts) | set(data.dev.texts) | set(data.test.texts)
    assert len(all_texts) == 40  # disjoint and complete
    again = load_data(DataConfig(train=path, dev_fraction=0.2, test_fraction=0.1, seed=3))
    assert again.dev.texts == data.dev.texts
    other = load_data(DataConfig(train=path, dev_fraction=0.2, test_fraction=0.1, seed=4))
    assert other.dev.texts != data.dev.texts


def test_tsv_keeps_quotes_verbatim(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", [('he said "no" ', 0), ("fine", 1)] * 5)
    data = load_data(DataConfig(train=path, dev=path, test_fraction=0))
    assert 'he said "no"' in data.train.texts


def test_csv_with_string_labels_and_custom_columns(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("review,sentiment\n" + "".join(f'"text, {i}",{"pos" if i % 3 else "neg"}\n' for i in range(30)))
    dev = tmp_path / "dev.csv"
    dev.write_text('review,sentiment\n"a, b",neg\nc,pos\n')
    data = load_data(DataConfig(train=train, dev=dev, test_fraction=0, text_column="review", label_column="sentiment"))
    assert data.label_names == ("neg", "pos")
    assert data.dev.texts == ("a, b", "c") and data.dev.labels == (0, 1)
    assert data.test is None
    with pytest.raises(ValueError, match="no test split"):
        data.split("test")
    saved = json.loads(data.save_label_map(tmp_path / "labels.json").read_text())
    assert saved == {"names": ["neg", "pos"], "numeric": False}


def test_jsonl_and_text_loader_pads_per_batch(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"sentence": "x" * (i + 1), "label": "ab"[i % 2]}) + "\n" for i in range(20)))
    data = load_data(DataConfig(train=path, test_fraction=0, dev_fraction=0.2, max_length=8))
    assert data.sizes()["dev"] == 4
    batches = list(data.loader("train", 4, tokenizer=ByteTokenizer()))
    assert all(b["input_ids"].shape == b["attention_mask"].shape for b in batches)
    assert max(b["input_ids"].shape[1] for b in batches) == 8  # truncated to max_length
    assert min(b["input_ids"].shape[1] for b in batches) < 8  # padded per batch, not globally
    with pytest.raises(ValueError, match="tokenizer"):
        data.loader("train", 4)


def test_wrong_path_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        load_data(DataConfig(train=tmp_path / "missing.tsv"))


def test_missing_column_names_file_column_and_choices(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", ROWS)
    with pytest.raises(ValueError, match=r"t\.tsv.*'target'.*\['text', 'label'\]"):
        load_data(DataConfig(train=path, label_column="target"))
    with pytest.raises(ValueError, match=r"t\.tsv.*'body'"):
        load_data(DataConfig(train=path, text_column="body"))


def test_text_column_is_guessed_or_explained(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", ROWS, header="words\tlabel")
    with pytest.raises(ValueError, match="data.text_column"):
        load_data(DataConfig(train=path))


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("text,label\n")
    with pytest.raises(ValueError, match=r"empty\.csv.*no data rows"):
        load_data(DataConfig(train=path))


def test_dev_label_unseen_in_train(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", [("a", "pos"), ("b", "neg")] * 5)
    dev = write_tsv(tmp_path / "dev.tsv", [("c", "pos"), ("d", "meh")])
    with pytest.raises(ValueError, match=r"dev\.tsv.*'meh'.*'label'.*never occurs"):
        load_data(DataConfig(train=train, dev=dev))


def test_bad_jsonl_line_and_unsupported_suffix(tmp_path):
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"text": "a", "label": 0}\nnot json\n')
    with pytest.raises(ValueError, match=r"t\.jsonl:2"):
        load_data(DataConfig(train=bad))
    other = tmp_path / "t.parquet"
    other.write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_data(DataConfig(train=other))


def test_plain_folder_is_not_a_dataset(tmp_path):
    with pytest.raises(ValueError, match="save_to_disk"):
        load_data(DataConfig(train=tmp_path))


def test_config_validation():
    with pytest.raises(ValueError, match="dev_fraction"):
        DataConfig(dev_fraction=1.5)
    with pytest.raises(ValueError, match=r"data\.train"):
        DataConfig(dev="dev.tsv")


def test_csv_exported_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefftext,label\n".encode() + b"".join(f"row {i},{i % 2}\n".encode() for i in range(10)))
    data = load_data(DataConfig(train=path, dev=path, test_fraction=0))
    assert data.train.texts[0] == "row 0"


# --- data checks at load time (issue 19 items 7 and 14) ----------------------------------------

import csv  # noqa: E402
import math  # noqa: E402

from lowcarb.errors import DataError, LowcarbError, MissingPathError  # noqa: E402


def _write(path, text):
    path.write_text(text)
    return path


def test_missing_file_is_a_one_line_user_error(tmp_path):
    with pytest.raises(MissingPathError, match="missing.csv"):
        load_data(DataConfig(train=tmp_path / "missing.csv"))
    train = write_tsv(tmp_path / "t.tsv", ROWS)
    with pytest.raises(MissingPathError, match=r"data.dev.*nodev.tsv"):
        load_data(DataConfig(train=train, dev=tmp_path / "nodev.tsv"))


def test_duplicated_header_column_names_file_line_and_column(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label,label\n" + "".join(f"t {i},{i % 2},0\n" for i in range(20)))
    with pytest.raises(DataError, match=r"d\.csv:1: column 'label' appears twice"):
        load_data(DataConfig(train=path))


def test_one_class_is_refused(tmp_path):
    path = _write(tmp_path / "one.csv", "text,label\n" + "".join(f"t {i},pos\n" for i in range(20)))
    with pytest.raises(DataError, match=r"one\.csv: every row has label 'pos'.*at least two classes"):
        load_data(DataConfig(train=path))


@pytest.mark.parametrize("bad", ["", "nan", "NaN", "  "])
def test_empty_or_nan_label_names_file_and_line(tmp_path, bad):
    rows = "".join(f"t {i},{i % 2}\n" for i in range(10)) + f"broken,{bad}\n"
    path = _write(tmp_path / "l.csv", "text,label\n" + rows)
    with pytest.raises(DataError, match=r"l\.csv:12: no label in column 'label'"):
        load_data(DataConfig(train=path))


def test_unlabelled_rows_may_be_dropped_with_a_warning(tmp_path):
    rows = "".join(f"t {i},{i % 2}\n" for i in range(10)) + "broken,nan\nother,\n"
    path = _write(tmp_path / "l.csv", "text,label\n" + rows)
    with pytest.warns(UserWarning, match=r"l\.csv: dropped 2 rows without a label \(lines 12, 13\)"):
        data = load_data(DataConfig(train=path, drop_unlabelled=True))
    assert sum(data.sizes().values()) == 10 and data.label_names == ("0", "1")


def test_nan_labels_in_jsonl(tmp_path):
    path = tmp_path / "n.jsonl"
    rows = [{"text": f"t {i}", "label": i % 2} for i in range(10)] + [{"text": "x", "label": math.nan}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"n\.jsonl:11: no label"):
        load_data(DataConfig(train=path))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:10]) + '{"text": "x", "label": null}\n')
    with pytest.raises(DataError, match=r"n\.jsonl:11: no label"):
        load_data(DataConfig(train=path))


def test_rows_with_extra_fields_are_refused_or_allowed(tmp_path):
    rows = "".join(f"t {i},{i % 2}\n" for i in range(10)) + "a, comma inside,1\n"
    path = _write(tmp_path / "x.csv", "text,label\n" + rows)
    with pytest.raises(DataError, match=r"x\.csv:12: 3 fields, the header has 2.*quote"):
        load_data(DataConfig(train=path))
    with pytest.warns(UserWarning, match=r"x\.csv: 1 row has more fields than the header \(line 12\)"):
        data = load_data(DataConfig(train=path, allow_extra_fields=True, test_fraction=0, dev=path))
    assert "a" in data.dev.texts


def test_quoted_tsv_with_a_line_break_in_a_text(tmp_path):
    path = tmp_path / "q.tsv"
    rows = [(f'line one {i}\nline "two"', i % 2) for i in range(10)] + [("tab\tinside", 1)]
    with path.open("w", newline="") as handle:  # as Python's csv (and pandas) write TSV
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    data = load_data(DataConfig(train=path, dev=path, test_fraction=0))
    assert set(data.dev.texts) == {t for t, _ in rows}
    assert not any(t.startswith('"') for t in data.dev.texts)


def test_glue_style_tsv_with_bare_quotes_keeps_them(tmp_path):
    # GLUE's TSVs are not quoted: a text may start with a quote that is part of the text.
    rows = [('" a phrase in quotes', 0), ('he said "no" then', 1)] * 5
    path = write_tsv(tmp_path / "glue.tsv", rows)
    data = load_data(DataConfig(train=path, dev=path, test_fraction=0))
    assert '" a phrase in quotes' in data.dev.texts and 'he said "no" then' in data.dev.texts


def test_broken_quoting_in_csv_names_the_line(tmp_path):
    path = _write(tmp_path / "b.csv", "text,label\n" + "".join(f"t {i},{i % 2}\n" for i in range(5)) + '"open quote,1\n')
    with pytest.raises(DataError, match=r"b\.csv: line 7: .*quot"):
        load_data(DataConfig(train=path))


def test_data_errors_are_lowcarb_errors(tmp_path):
    path = _write(tmp_path / "e.csv", "text,label\n")
    with pytest.raises(LowcarbError):
        load_data(DataConfig(train=path))
