import pytest

from lowcarb.data import LabelMap


def test_integer_labels_keep_their_order():
    m = LabelMap.build(["1", 0, "2", 1])
    assert m.numeric and m.names == ("0", "1", "2")
    assert m.encode_all([0, "1", 2.0]) == [0, 1, 2]


def test_integer_labels_sort_numerically_not_as_text():
    m = LabelMap.build([10, 2, 1])
    assert m.names == ("1", "2", "10")
    assert m.encode(10) == 2


def test_string_labels_map_and_round_trip(tmp_path):
    m = LabelMap.build(["pos", "neg", "neutral", "pos"])
    assert not m.numeric
    assert m.names == ("neg", "neutral", "pos")
    assert [m.decode(m.encode(x)) for x in ("pos", "neg")] == ["pos", "neg"]
    path = m.save(tmp_path / "labels.json")
    assert LabelMap.load(path) == m


def test_unknown_label_is_not_contained():
    m = LabelMap.build(["a", "b"])
    assert "c" not in m
    with pytest.raises(KeyError):
        m.encode("c")


def test_bad_label_map_file_names_the_file(tmp_path):
    bad = tmp_path / "labels.json"
    bad.write_text('{"oops": 1}')
    with pytest.raises(ValueError, match="labels.json"):
        LabelMap.load(bad)
