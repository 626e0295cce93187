import sys

import pytest

from lowcarb.data import DataConfig, load_data


def test_datasets_folder_without_the_extra_says_what_to_install(tmp_path, monkeypatch):
    # A None entry in sys.modules makes `import datasets` raise ImportError, as on a machine
    # without the extra.
    monkeypatch.setitem(sys.modules, "datasets", None)
    (tmp_path / "dataset_dict.json").write_text('{"splits": ["train"]}')
    with pytest.raises(ValueError, match=r"lowcarb\[hf-datasets\]"):
        load_data(DataConfig(train=tmp_path))


def test_dataset_dict_with_class_labels(tmp_path):
    import datasets
    import pyarrow as pa

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )

    def dataset(texts, labels, fingerprint):
        # An explicit fingerprint skips datasets' dill hashing of the table (which fails with
        # some dill/pyarrow pairs and is irrelevant here).
        table = pa.table({"sentence": texts, "label": pa.array(labels, pa.int64())}).cast(features.arrow_schema)
        return datasets.Dataset(table, info=datasets.DatasetInfo(features=features), fingerprint=fingerprint)

    dd = datasets.DatasetDict(
        {
            "train": dataset([f"text {i}" for i in range(20)], [i % 2 for i in range(20)], "train"),
            "validation": dataset(["a", "b"], [1, 0], "dev"),
        }
    )
    dd.save_to_disk(str(tmp_path / "ds"))
    data = load_data(DataConfig(train=tmp_path / "ds", test_fraction=0.1))
    assert data.label_names == ("neg", "pos")
    assert data.dev.texts == ("a", "b") and data.dev.labels == (1, 0)
    assert data.sizes() == {"train": 18, "dev": 2, "test": 2}
    with pytest.raises(ValueError, match="'review'"):
        load_data(DataConfig(train=tmp_path / "ds", text_column="review"))
