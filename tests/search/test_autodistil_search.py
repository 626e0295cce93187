"""Supernet training and the budgeted search on a tiny teacher."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from _autodistil_tiny import batches, tiny_teacher

from lowcarb.errors import ConfigError
from lowcarb.search.autodistil import (
    AutoDistilConfig,
    Candidate,
    SubnetConfig,
    Supernet,
    TeacherShape,
    autodistil,
    autodistil_partitions,
    budget_flops,
    candidates_markdown,
    choose_partition,
    plot_candidates,
    score,
    split_space,
    student_space,
    subnet_flops,
    teacher_relations,
    train_supernet,
)
from lowcarb.train import TrainConfig


def _config(budget: float, **changes) -> AutoDistilConfig:
    return AutoDistilConfig(flops_budget=budget, seq_len=10, steps_per_subspace=3, lr=1e-3, **changes)


def test_supernet_training_lowers_the_held_out_relation_loss():
    teacher = tiny_teacher()
    space = student_space(teacher)
    _, small, _ = split_space(space, 3)
    # A supernet that starts far from the teacher, so a few steps visibly help.
    supernet = Supernet.from_teacher(tiny_teacher(seed=5), small.largest)
    held_out = teacher_relations(teacher, batches(2, seed=9), None)
    before = score(supernet, small.largest, held_out, space.relation_heads)
    steps, loss, examples = train_supernet(
        supernet, small, teacher, batches(6), TrainConfig(epochs=5, max_steps=30, lr=3e-3, quiet=True),
        relation_heads=space.relation_heads,
    )
    after = score(supernet, small.largest, held_out, space.relation_heads)
    assert steps == 30 and examples == 30 * 4 and loss is not None
    assert after < before
    # The teacher is untouched.
    fresh = tiny_teacher()
    for a, b in zip(teacher.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


def test_search_respects_the_budget_and_picks_the_lowest_loss():
    teacher = tiny_teacher()
    shape = TeacherShape.of(teacher)
    budget = 0.45 * subnet_flops(shape.config, 10)
    result = autodistil(teacher, batches(3), batches(2, seed=7), _config(budget))
    assert result.candidates and all(c.flops <= budget for c in result.candidates)
    assert all(c.flops == subnet_flops(c.config, 10) for c in result.candidates)
    # Every student of the space under the budget was searched.
    fitting = [c for s in result.subspaces for c in s.configs if subnet_flops(c, 10) <= budget]
    assert sorted(c.config for c in result.candidates) == sorted(fitting)
    chosen = result.chosen
    assert sum(c.chosen for c in result.candidates) == 1
    assert chosen.score == min(c.score for c in result.candidates)
    # The base sub-space (3 layers, the teacher's width) has nothing under the budget: not trained.
    assert result.skipped_subspaces == ("base",)
    assert [r.subspace.name for r in result.supernets] == ["tiny", "small"]
    assert all(r.steps == 3 and r.footprint["energy_j"] >= 0 for r in result.supernets)
    assert result.energy_j >= result.search_footprint["energy_j"]
    student = result.extract()
    assert student.config.num_hidden_layers == chosen.config.num_layers
    summary = result.to_dict()
    assert summary["chosen"]["student"] == chosen.config.key
    assert len(summary["candidates"]) == len(result.candidates)


def test_max_candidates_samples_under_the_budget():
    teacher = tiny_teacher()
    result = autodistil(teacher, batches(2), batches(1, seed=7), _config(0.5, max_candidates=3))
    assert len(result.candidates) == 3
    assert all(c.flops <= result.budget_flops for c in result.candidates)


def test_budget_fraction_and_errors():
    shape = TeacherShape.of(tiny_teacher())
    assert budget_flops(0.5, shape, 10) == 0.5 * subnet_flops(shape.config, 10)
    assert budget_flops(2e6, shape, 10) == 2e6
    with pytest.raises(ValueError, match="flops_budget must be > 0"):
        AutoDistilConfig(flops_budget=0)
    with pytest.raises(ValueError, match="raise the FLOPs budget"):
        autodistil(tiny_teacher(), batches(1), batches(1), _config(10.0 + 1))


def test_report_plot_and_table(tmp_path):
    teacher = tiny_teacher()
    summary = autodistil(teacher, batches(2), batches(1, seed=7), _config(0.4)).to_dict()
    png = plot_candidates(summary, tmp_path / "candidates.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = candidates_markdown(summary)
    assert table.count("\n| ") == len(summary["candidates"]) + 1  # header + one row each
    assert f"**{summary['chosen']['student']}**" in table


def _chosen(score: float, flops: float) -> SimpleNamespace:
    return SimpleNamespace(chosen=Candidate(SubnetConfig(2, 32, 4, 64), "small", flops, score, True))


def test_partition_choice_is_the_lowest_held_out_loss_then_fewer_flops_then_fewer_subspaces():
    assert choose_partition({2: _chosen(0.24, 7e8), 3: _chosen(0.25, 5e8)}) == 2
    assert choose_partition({2: _chosen(0.26, 7e8), 3: _chosen(0.25, 5e8)}) == 3
    assert choose_partition({2: _chosen(0.25, 7e8), 3: _chosen(0.25, 5e8)}) == 3
    assert choose_partition({3: _chosen(0.25, 5e8), 2: _chosen(0.25, 5e8)}) == 2
    with pytest.raises(ConfigError, match="at least one"):
        choose_partition({})


def test_partitions_search_each_subspace_count_on_the_same_held_out_text():
    teacher = tiny_teacher()
    budget = 0.6 * subnet_flops(TeacherShape.of(teacher).config, 10)
    held_out = (b for b in batches(2, seed=7))  # one-shot: every K must still see both batches
    k, results = autodistil_partitions(teacher, batches(3), held_out, _config(budget), partitions=(3, 2, 2))
    assert sorted(results) == [2, 3]
    assert all(len(r.subspaces) == key for key, r in results.items())
    assert all(r.notes["held_out_batches"] == 2 for r in results.values())
    assert results[k].chosen.score == min(r.chosen.score for r in results.values())
    assert k == choose_partition(results)
    student = results[k].extract()
    assert student.config.num_hidden_layers == results[k].chosen.config.num_layers
    with pytest.raises(ConfigError, match="sub-space counts"):
        autodistil_partitions(teacher, batches(1), batches(1), _config(budget), partitions=())


def test_partitions_leave_out_a_subspace_count_that_cannot_work_before_training():
    teacher = tiny_teacher()  # 3 layers: no split into 4 sub-spaces
    budget = 0.6 * subnet_flops(TeacherShape.of(teacher).config, 10)
    said: list[str] = []
    k, results = autodistil_partitions(teacher, batches(2), batches(1, seed=7), _config(budget),
                                       partitions=(2, 4), progress=said.append)
    assert k == 2 and list(results) == [2]
    assert any("4 sub-spaces left out" in line for line in said)
    with pytest.raises(ConfigError, match="no sub-space count works: K=4: .*K=5"):
        autodistil_partitions(teacher, batches(1), batches(1), _config(budget), partitions=(5, 4))
    with pytest.raises(ConfigError, match="no student of the space fits"):
        autodistil_partitions(teacher, batches(1), batches(1), _config(1.0 + 1), partitions=(2, 3))
