"""Folders written by Hugging Face `datasets` (`Dataset.save_to_disk` / `DatasetDict.save_to_disk`).

`datasets` is an optional extra (`pip install lowcarb[hf-datasets]`); it is imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lowcarb.data.tables import RawColumns, check_label_column, is_missing_label, pick_text_column
from lowcarb.errors import DataError

DEV_SPLIT_NAMES = ("validation", "dev", "valid")


def is_datasets_folder(path: Path) -> bool:
    # save_to_disk writes state.json (Dataset) or dataset_dict.json (DatasetDict).
    return path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists())


def _columns(dataset: Any, text_column: str | None, label_column: str, source: str) -> RawColumns:
    columns = list(dataset.column_names)
    if len(dataset) == 0:
        raise DataError(f"{source}: the dataset has no rows")
    text_col = pick_text_column(columns, text_column, source)
    check_label_column(columns, label_column, source)
    feature = dataset.features.get(label_column)
    labels: list[Any] = list(dataset[label_column])  # a dataset column holds any values
    # ClassLabel features store integers; keep their names so reports show "positive", not "1".
    names = getattr(feature, "names", None)
    for index, value in enumerate(labels):
        # ClassLabel stores a missing label as -1.
        if is_missing_label(value) or (names and value == -1):
            raise DataError(f"{source}: row {index} has no label in column {label_column!r} (null or NaN)")
    if names:
        labels = [names[int(v)] for v in labels]
    return RawColumns(
        tuple(str(t) for t in dataset[text_col]), tuple(labels), source, text_col, label_column
    )


def read_datasets_folder(
    path: str | Path, text_column: str | None, label_column: str
) -> dict[str, RawColumns]:
    """Splits found in the folder, keyed "train", "dev", "test" (a plain Dataset is "train")."""
    path = Path(path)
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            f"{path} is a Hugging Face datasets folder; reading it needs the optional extra: "
            "pip install 'lowcarb[hf-datasets]'"
        ) from exc
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        out: dict[str, RawColumns] = {}
        if "train" not in loaded:
            raise DataError(f"{path}: the DatasetDict has no 'train' split; splits are {list(loaded)}")
        out["train"] = _columns(loaded["train"], text_column, label_column, f"{path}[train]")
        for name in DEV_SPLIT_NAMES:
            if name in loaded:
                out["dev"] = _columns(loaded[name], text_column, label_column, f"{path}[{name}]")
                break
        if "test" in loaded:
            out["test"] = _columns(loaded["test"], text_column, label_column, f"{path}[test]")
        return out
    return {"train": _columns(loaded, text_column, label_column, str(path))}
