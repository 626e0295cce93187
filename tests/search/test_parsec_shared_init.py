"""Shared initialisation: candidates of a training-free search assembled from one module per key."""

from __future__ import annotations

import torch
from _parsec_tiny import image_batch, text_batch, tiny_cnn, tiny_text

from lowcarb.search.parsec.shared_init import SharedInit, part, shared_init
from lowcarb.search.parsec.weightless import score_architecture


def _archs(space, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [space.uniform_sample(g) for _ in range(n)]


def _state(built, key):
    return {k: v.clone() for k, v in built.parts[key].state_dict().items()}


def test_outside_shared_init_every_part_is_fresh():
    calls = []
    first = part("k", lambda: calls.append(1) or torch.nn.Linear(2, 2))
    second = part("k", lambda: calls.append(1) or torch.nn.Linear(2, 2))
    assert first is not second and len(calls) == 2


def test_inside_shared_init_a_key_is_made_once_and_shared():
    space = tiny_cnn()
    a, b = _archs(space, 2)
    shared = SharedInit(seed=0)
    with shared_init(shared):
        built_a, built_b = space.build(a), space.build(b)
    assert built_a.parts["stem"] is built_b.parts["stem"] is shared.modules["stem"]
    common = set(built_a.parts) & set(built_b.parts)
    assert all(built_a.parts[k] is built_b.parts[k] for k in common)
    assert set(shared.modules) == set(built_a.parts) | set(built_b.parts)


def test_a_keys_initialisation_does_not_depend_on_the_order_of_candidates():
    space = tiny_cnn()
    archs = _archs(space, 4, seed=3)
    forward, backward = SharedInit(seed=5), SharedInit(seed=5)
    with shared_init(forward):
        for arch in archs:
            space.build(arch)
    with shared_init(backward):
        for arch in reversed(archs):
            space.build(arch)
    assert set(forward.modules) == set(backward.modules)
    for key, module in forward.modules.items():
        for name, value in module.state_dict().items():
            assert torch.equal(value, backward.modules[key].state_dict()[name]), (key, name)
    # Another search seed initialises differently.
    other = SharedInit(seed=6)
    with shared_init(other):
        space.build(archs[0])
    assert not torch.equal(
        other.modules["stem"].state_dict()["0.weight"], forward.modules["stem"].state_dict()["0.weight"]
    )


def test_shared_init_leaves_the_global_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    space = tiny_text()
    with shared_init(SharedInit(seed=1)):
        for arch in _archs(space, 3):
            space.build(arch)
    # The architectures above were drawn from their own generator; the builds used fork_rng.
    assert torch.equal(torch.rand(3), expected)


def test_shared_init_seeds_only_the_cpu_generator(monkeypatch):
    # fork_rng(devices=[]) saves and restores the CPU generator only: seeding an accelerator's
    # generator in there would change its stream for good (and, on a machine without one, queue
    # a lazy CUDA call with a captured stack per module).
    def reseeded(*_args):
        raise AssertionError("an accelerator's generator was reseeded")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded)
    monkeypatch.setattr(torch.cuda, "manual_seed", reseeded)
    space = tiny_cnn()
    arch = _archs(space, 1)[0]
    with shared_init(SharedInit(seed=1)):
        first = space.build(arch)
    with shared_init(SharedInit(seed=1)):
        again = space.build(arch)
    for key in first.parts:
        assert _state(first, key).keys() == _state(again, key).keys()
        for name, value in _state(first, key).items():
            assert torch.equal(value, _state(again, key)[name]), (key, name)


def test_shared_scores_are_a_function_of_the_candidate():
    for space, batch in ((tiny_cnn(), image_batch), (tiny_text(), text_batch)):
        archs = _archs(space, 4, seed=2)
        b = [batch()]
        one, two = SharedInit(seed=0), SharedInit(seed=0)
        forward = [score_architecture(space, a, b, "naswot", 0, one) for a in archs]
        backward = [score_architecture(space, a, b, "naswot", 0, two) for a in reversed(archs)]
        assert forward == list(reversed(backward))
