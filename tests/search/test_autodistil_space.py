"""The AutoDistil student space: choices, sub-spaces, FLOPs from a configuration."""

from __future__ import annotations

import pytest
from transformers import BertConfig

from lowcarb.search.autodistil import (
    StudentSpace,
    SubnetConfig,
    TeacherShape,
    split_space,
    student_space,
    subnet_flops,
)

MINILM = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536, num_labels=2)


def test_default_space_under_minilm():
    space = student_space(MINILM)
    assert space.layers == (1, 2, 3, 4, 5, 6)
    assert space.hidden_sizes == (144, 192, 240, 288, 336, 384)
    assert space.intermediate_sizes == (256, 512, 768, 1024, 1280, 1536)
    assert space.num_heads == (6, 12)
    assert space.relation_heads == 12
    configs = space.configs()
    assert len(configs) == 6 * 6 * 2 * 6
    assert all(c.hidden_size % c.num_heads == 0 and c.hidden_size % 12 == 0 for c in configs)


def test_split_into_tiny_small_base_boxes():
    subspaces = split_space(student_space(MINILM), 3)
    assert [s.name for s in subspaces] == ["tiny", "small", "base"]
    assert [s.largest.key for s in subspaces] == [
        "L2-H192-A12-F512", "L4-H288-A12-F1024", "L6-H384-A12-F1536"
    ]
    # The base supernet is the teacher's size; every student fits its own supernet.
    assert subspaces[-1].largest == TeacherShape.of(MINILM).config
    for sub in subspaces:
        assert len(sub.configs) == 16
        assert all(c.within(sub.largest) for c in sub.configs)
    # Sub-spaces are disjoint and ordered by size.
    keys = [c for s in subspaces for c in s.configs]
    assert len(set(keys)) == len(keys)
    flops = [max(subnet_flops(c, 64) for c in s.configs) for s in subspaces]
    assert flops == sorted(flops)


def test_split_needs_enough_choices():
    space = StudentSpace(layers=(1, 2), hidden_sizes=(16, 32), num_heads=(4,), intermediate_sizes=(8, 16))
    with pytest.raises(ValueError, match="cannot split 2 layer choices"):
        split_space(space, 3)
    with pytest.raises(ValueError, match=">= 1"):
        split_space(space, 0)


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="not divisible by 5 heads"):
        SubnetConfig(2, 32, 5, 64)
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        SubnetConfig(0, 32, 4, 64)
    with pytest.raises(ValueError, match="BERT-style teacher"):
        TeacherShape.of(object())
    with pytest.raises(ValueError, match="seq_len"):
        subnet_flops(SubnetConfig(1, 32, 4, 64), 0)


def test_flops_grow_with_every_dimension_and_match_the_formula():
    base = SubnetConfig(2, 96, 6, 256)
    t = 16
    expected = 2 * (8 * t * 96 * 96 + 4 * t * t * 96 + 4 * t * 96 * 256) + 2 * 96 * 96 + 2 * 96 * 2
    assert subnet_flops(base, t) == expected
    for bigger in (SubnetConfig(3, 96, 6, 256), SubnetConfig(2, 144, 6, 256), SubnetConfig(2, 96, 6, 512)):
        assert subnet_flops(bigger, t) > subnet_flops(base, t)
    # Heads do not change the arithmetic.
    assert subnet_flops(SubnetConfig(2, 96, 12, 256), t) == subnet_flops(base, t)
