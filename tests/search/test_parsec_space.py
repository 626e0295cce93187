"""Spaces: every decision value builds and runs; weight-store keys; malformed spaces fail clearly."""

from __future__ import annotations

import pytest
import torch
from _parsec_tiny import image_batch, text_batch, tiny_cnn, tiny_text
from torch import nn

from lowcarb.search.parsec import CnnSpaceConfig, Decision, Space, TextSpaceConfig, make_space
from lowcarb.search.parsec.space import CNN_OPS, Built


def _every_value(space):
    base = {d.name: d.choices[0] for d in space.decisions}
    for d in space.decisions:
        for choice in d.choices:
            yield d.name, choice, {**base, d.name: choice}


@pytest.mark.parametrize("make, batch", [(tiny_cnn, image_batch), (tiny_text, text_batch)])
def test_every_decision_value_builds_and_runs(make, batch):
    space = make()
    b = batch()
    n = b["labels"].shape[0]
    for name, choice, arch in _every_value(space):
        built = space.build(arch)
        out = built.model(**{k: v for k, v in b.items() if k != "labels"})
        assert out.shape == (n, 10 if space.name == "cnn" else 2), (name, choice)
        assert torch.isfinite(out).all(), (name, choice)
        # Every parameter of the model belongs to exactly one weight-store part.
        in_parts = {id(p) for m in built.parts.values() for p in m.parameters()}
        assert {id(p) for p in built.model.parameters()} == in_parts, (name, choice)


def test_cnn_builds_only_the_chosen_operations():
    space = tiny_cnn()
    arch = {d.name: d.choices[-1] for d in space.decisions}  # the last input, "zero" everywhere
    arch_conv = {**arch, "node0.op0": "conv5x5"}
    built = space.build(arch_conv)
    convs = [m for m in built.model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2  # the stem and the one conv5x5 edge, nothing else
    assert "cell0/node0.op0=conv5x5" in built.parts
    assert not any("conv3x3" in k for k in built.parts)


def test_text_depth_decides_which_layers_exist():
    space = tiny_text()
    arch = {d.name: d.choices[0] for d in space.decisions}
    one = space.build({**arch, "layers": 1})
    two = space.build({**arch, "layers": 2})
    assert len(one.model.blocks) == 1 and len(two.model.blocks) == 2
    assert sum(p.numel() for p in two.model.parameters()) > sum(
        p.numel() for p in one.model.parameters()
    )
    assert all(k.startswith("width=8/") for k in one.parts)


def test_cnn_space_size_and_uniform_sample_valid():
    space = tiny_cnn()
    # node0: 1 input x 7 ops per edge; node1: 2 inputs x 7 ops per edge.
    assert space.size() == (1 * 7) ** 2 * (2 * 7) ** 2
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert space.validate(space.uniform_sample(g))


def _noop_build(arch):
    return Built(nn.Identity(), {})


@pytest.mark.parametrize(
    "decisions, match",
    [
        ([], "no decisions"),
        ([Decision("a", (1, 2)), Decision("a", (3,))], "names a decision twice"),
        ([("a", (1, 2))], "must be Decision"),
    ],
)
def test_malformed_space_errors(decisions, match):
    with pytest.raises(ValueError, match=match):
        Space("bad", tuple(decisions), _noop_build)


@pytest.mark.parametrize(
    "name, choices, match",
    [
        ("", (1,), "non-empty string name"),
        ("x", (), "non-empty tuple of choices"),
        ("x", (1, 1), "lists a choice twice"),
        ("x", (True, False), "strings or integers"),
        ("x", (1.5,), "strings or integers"),
        ("x", [1, 2], "non-empty tuple"),
    ],
)
def test_malformed_decision_errors(name, choices, match):
    with pytest.raises(ValueError, match=match):
        Decision(name, choices)


def test_make_space_checks_its_items():
    space = make_space({"width": [8, 16], "act": ("relu", "gelu")}, _noop_build)
    assert space.names == ("width", "act")
    with pytest.raises(ValueError, match="choices must be a list"):
        make_space([("width", "wide")], _noop_build)
    with pytest.raises(ValueError, match=r"is \(name, choices\)"):
        make_space([("width",)], _noop_build)


def test_bad_architecture_errors_name_the_problem():
    space = tiny_cnn()
    arch = {d.name: d.choices[0] for d in space.decisions}
    with pytest.raises(ValueError, match=r"missing \['node0.in0'\]"):
        space.build({k: v for k, v in arch.items() if k != "node0.in0"})
    with pytest.raises(ValueError, match="unknown \\['depth'\\]"):
        space.build({**arch, "depth": 3})
    with pytest.raises(ValueError, match="not a choice of decision 'node0.op0'"):
        space.build({**arch, "node0.op0": "conv7x7"})


def test_space_configs_reject_bad_settings():
    with pytest.raises(ValueError, match="unknown"):
        CnnSpaceConfig(ops=("conv3x3", "conv9x9"))
    with pytest.raises(ValueError, match="channels"):
        CnnSpaceConfig(channels=0)
    with pytest.raises(ValueError, match="multiples of 4"):
        TextSpaceConfig(widths=(10,))
    with pytest.raises(ValueError, match="unknown mixers"):
        TextSpaceConfig(mixers=("lstm",))
    assert set(CNN_OPS) == {
        "conv3x3",
        "conv5x5",
        "sepconv3x3",
        "maxpool3x3",
        "avgpool3x3",
        "identity",
        "zero",
    }
