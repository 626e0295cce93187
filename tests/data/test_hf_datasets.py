import importlib.util

import pytest

from lowcarb.data import DataConfig, load_data

HAS_DATASETS = importlib.util.find_spec("datasets") is not None


@pytest.mark.skipif(HAS_DATASETS, reason="checks the message shown when the extra is missing")
def test_datasets_folder_without_the_extra_says_what_to_install(tmp_path):
    (tmp_path / "dataset_dict.json").write_text('{"splits": ["train"]}')
    with pytest.raises(ValueError, match=r"lowcarb\[hf-datasets\]"):
        load_data(DataConfig(train=tmp_path))


@pytest.mark.skipif(not HAS_DATASETS, reason="needs the optional extra: pip install 'lowcarb[hf-datasets]'")
def test_dataset_dict_with_class_labels(tmp_path):
    import datasets

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    rows = {"sentence": [f"text {i}" for i in range(20)], "label": [i % 2 for i in range(20)]}
    dev = {"sentence": ["a", "b"], "label": [1, 0]}
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows, features), "validation": datasets.Dataset.from_dict(dev, features)}
    )
    dd.save_to_disk(str(tmp_path / "ds"))
    data = load_data(DataConfig(train=tmp_path / "ds", test_fraction=0.1))
    assert data.label_names == ("neg", "pos")
    assert data.dev.texts == ("a", "b") and data.dev.labels == (1, 0)
    assert data.sizes() == {"train": 18, "dev": 2, "test": 2}
    with pytest.raises(ValueError, match="'review'"):
        load_data(DataConfig(train=tmp_path / "ds", text_column="review"))
