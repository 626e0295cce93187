import torch

from lowcarb.data import DataConfig, load_data


def test_digits_split_is_fixed_disjoint_and_complete():
    a = load_data(DataConfig())
    b = load_data(DataConfig(seed=123))  # the run seed does not move the default split
    assert a.kind == "image" and a.num_labels == 10 and a.feature_shape == (1, 8, 8)
    assert sum(a.sizes().values()) == 1797
    assert torch.equal(a.test.features, b.test.features)
    assert torch.equal(a.dev.labels, b.dev.labels)
    # disjoint: no image is in two splits
    rows = {tuple(x.flatten().tolist()) for x in a.test.features}
    assert not rows & {tuple(x.flatten().tolist()) for x in a.train.features[:200]}
    assert float(a.train.features.max()) <= 1.0 and float(a.train.features.min()) >= 0.0


def test_digits_loader_batches():
    data = load_data(DataConfig())
    batch = next(iter(data.loader("train", 16, shuffle=True, seed=1)))
    assert batch["pixel_values"].shape == (16, 1, 8, 8)
    assert batch["labels"].dtype == torch.long
    again = next(iter(data.loader("train", 16, shuffle=True, seed=1)))
    assert torch.equal(batch["labels"], again["labels"])  # seeded shuffling


def test_max_train_examples_subsets_train_only():
    data = load_data(DataConfig(max_train_examples=100))
    assert data.sizes()["train"] == 100
    assert data.sizes()["dev"] == load_data(DataConfig()).sizes()["dev"]
