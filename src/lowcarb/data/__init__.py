"""Data loaders: the embedded digits default, text tables (tsv/csv/jsonl), Hugging Face datasets folders.

    bundle = load_data(DataConfig(train="train.tsv", dev="dev.tsv"))
    loader = bundle.loader("train", batch_size=32, shuffle=True, tokenizer=handle.tokenizer)
"""

from lowcarb.data.bundle import Batch, DataBundle, ImageSplit, TextSplit, Tokenizer, make_loader
from lowcarb.data.config import DataConfig
from lowcarb.data.labels import LabelMap
from lowcarb.data.loading import load_data

__all__ = [
    "Batch",
    "DataBundle",
    "DataConfig",
    "ImageSplit",
    "LabelMap",
    "TextSplit",
    "Tokenizer",
    "load_data",
    "make_loader",
]
