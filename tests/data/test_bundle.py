import torch

from lowcarb.data import TextSplit, make_loader
from lowcarb.data.bundle import LengthGroupedBatchSampler
from lowcarb.models import ByteTokenizer


def test_length_grouped_batches_cover_every_example_once_per_epoch():
    lengths = [(i * 7919) % 97 for i in range(1000)]
    sampler = LengthGroupedBatchSampler(lengths, 32, torch.Generator().manual_seed(0), window_batches=4)
    epoch1, epoch2 = list(sampler), list(sampler)
    assert len(epoch1) == len(sampler) == 32
    for epoch in (epoch1, epoch2):
        assert sorted(i for b in epoch for i in b) == list(range(1000))
    assert epoch1 != epoch2  # reshuffled every epoch


def test_length_grouping_cuts_padding_and_is_seeded():
    texts = tuple("x" * ((i * 37) % 120 + 1) for i in range(640))
    split = TextSplit(texts, tuple(i % 2 for i in range(640)))
    tok = ByteTokenizer()

    def padded_tokens(group, seed=0):
        loader = make_loader(split, 32, shuffle=True, tokenizer=tok, max_length=128, seed=seed, group_by_length=group)
        return sum(b["input_ids"].numel() for b in loader), [b["labels"].tolist() for b in loader]

    plain, _ = padded_tokens(False)
    grouped, order = padded_tokens(True)
    assert grouped < 0.7 * plain
    assert padded_tokens(True)[1] == order
    assert padded_tokens(True, seed=1)[1] != order


def test_text_bundles_group_by_length_unless_told_not_to(tmp_path):
    from lowcarb.data import DataConfig, load_data

    path = tmp_path / "t.csv"
    rows = ["text,label"] + [f"{'word ' * ((i * 13) % 40 + 1)},{i % 2}" for i in range(400)]
    path.write_text("\n".join(rows) + "\n")
    tok = ByteTokenizer()

    def padded(**config):
        data = load_data(DataConfig(train=path, test_fraction=0, max_length=256, **config))
        return sum(b["input_ids"].numel() for b in data.loader("train", 32, shuffle=True, tokenizer=tok))

    grouped, plain = padded(), padded(group_by_length=False)
    assert grouped < 0.7 * plain
    # Unshuffled loaders (evaluation) keep the file's order whatever the setting.
    data = load_data(DataConfig(train=path, test_fraction=0))
    labels = [y for b in data.loader("dev", 8, tokenizer=tok) for y in b["labels"].tolist()]
    assert labels == list(data.dev.labels)
