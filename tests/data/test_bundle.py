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
