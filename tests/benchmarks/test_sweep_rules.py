"""The decision rules of the issue-18 sweeps in benchmarks/sweeps/, fixed before their runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "sweeps"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import autodistil_finetune_lr  # noqa: E402
import autodistil_supernet_steps  # noqa: E402
import chain_depth  # noqa: E402
import chain_order  # noqa: E402
import earlybert_rewind  # noqa: E402
import earlybert_stop  # noqa: E402
import vocab_keep_first  # noqa: E402
import vocab_row_bits  # noqa: E402


@pytest.mark.parametrize(
    "rewind, no_rewind, chosen",
    [(0.869, 0.8785, False), (0.869, 0.864, False), (0.869, 0.8635, True), (0.869, 0.80, True)],
)
def test_rewind_only_when_not_rewinding_loses_more_than_half_a_point(rewind, no_rewind, chosen):
    assert earlybert_rewind.choose({True: rewind, False: no_rewind}) is chosen


def test_keep_first_is_the_smallest_within_a_fifth_of_a_point_of_twenty_thousand():
    means = {0: 0.9312, 2000: 0.9309, 5000: 0.9300, 10000: 0.9325, 15000: 0.9331, 20000: 0.9350}
    assert vocab_keep_first.choose(means) == 15000
    assert vocab_keep_first.choose({**means, 0: 0.9330}) == 0
    assert vocab_keep_first.choose({**means, 10000: 0.9329, 15000: 0.9329}) == 20000
    assert vocab_keep_first.choose({**means, 10000: 0.9330}) == 10000  # exactly 0.2 points: within


def test_row_storage_is_the_smallest_table_within_a_fifth_of_a_point_of_int8():
    size = {"int8": 100.0, "int4-g32": 60.0, "int4-g64": 56.0, "int4-g128": 54.0}
    means = {"int8": 0.9330, "int4-g32": 0.9320, "int4-g64": 0.9310, "int4-g128": 0.9300}
    assert vocab_row_bits.choose(means, size) == "int4-g64"  # g128 is 0.3 points down
    assert vocab_row_bits.choose({**means, "int4-g128": 0.9311}, size) == "int4-g128"
    assert vocab_row_bits.choose({**means, "int4-g32": 0.9, "int4-g64": 0.9, "int4-g128": 0.9}, size) == "int8"
    assert vocab_row_bits.choose({**means, "int4-g64": 0.9309}, size) == "int4-g32"


def _trial(mask_every, window, accuracy, steps):
    return {"mask_every": mask_every, "window": window, "heldout_accuracy": accuracy,
            "search_steps": steps}


def test_stop_setting_is_the_earliest_stop_within_half_a_point():
    current = _trial(5, 5, 0.8785, 60)
    assert earlybert_stop.choose([current, _trial(5, 3, 0.875, 35), _trial(3, 5, 0.88, 30)]) == (3, 5)
    assert earlybert_stop.choose([current, _trial(5, 3, 0.8735, 35), _trial(3, 5, 0.87, 30)]) == (5, 3)
    assert earlybert_stop.choose([current, _trial(5, 3, 0.873, 35), _trial(3, 5, 0.86, 30)]) == (5, 5)
    assert earlybert_stop.choose([current, _trial(5, 3, 0.88, 60)]) == (5, 5)  # a tie keeps the current


def test_chain_depth_is_the_most_accurate_feasible_one_a_deeper_one_only_by_more_than_a_quarter_point():
    means = {3: 0.8800, 4: 0.8830, 5: 0.9000}
    assert chain_depth.choose(means, [3, 4]) == 4  # 0.3 points better; 5 misses a cost target
    assert chain_depth.choose({**means, 4: 0.8825}, [3, 4]) == 3  # exactly 0.25 points: not more
    assert chain_depth.choose({**means, 4: 0.8700}, [4, 3]) == 3
    assert chain_depth.choose(means, [3, 4, 5]) == 5
    assert chain_depth.choose({3: 0.88, 4: 0.8826, 5: 0.8850}, [3, 4, 5]) == 4  # 5 is not > 4 + 0.25
    assert chain_depth.choose(means, [4]) == 4
    with pytest.raises(ValueError, match="no depth"):
        chain_depth.choose(means, [])


def test_finetune_lr_replaces_the_current_one_only_when_more_than_a_quarter_point_better():
    means = {5e-5: 0.8700, 1e-4: 0.8720, 2e-4: 0.8750, 4e-4: 0.8600}
    assert autodistil_finetune_lr.choose(means) == 2e-4  # 0.3 points better
    assert autodistil_finetune_lr.choose({**means, 2e-4: 0.8745}) == 1e-4  # exactly 0.25: not more
    assert autodistil_finetune_lr.choose({**means, 5e-5: 0.8760, 2e-4: 0.8760}) == 5e-5  # ties: smaller lr
    assert autodistil_finetune_lr.choose({**means, 1e-4: 0.9}) == 1e-4
    with pytest.raises(ValueError, match="current lr"):
        autodistil_finetune_lr.choose({2e-4: 0.9, 4e-4: 0.8})


def test_more_supernet_steps_only_when_the_searched_student_gains_more_than_a_quarter_point():
    assert autodistil_supernet_steps.choose({600: 0.8698, 1200: 0.8725}) == 1200  # 0.27 points
    assert autodistil_supernet_steps.choose({600: 0.8698, 1200: 0.8723}) == 600  # exactly 0.25
    assert autodistil_supernet_steps.choose({600: 0.8698, 1200: 0.86}) == 600
    with pytest.raises(ValueError, match="current step count"):
        autodistil_supernet_steps.choose({1200: 0.9})


def test_lowrank_first_replaces_the_recipes_order_only_when_feasible_and_more_than_a_quarter_point_better():
    means = {"distill_first": 0.8820, "lowrank_first": 0.8850}
    both = {"distill_first": True, "lowrank_first": True}
    assert chain_order.choose(means, both) == "lowrank_first"  # 0.3 points better
    assert chain_order.choose({**means, "lowrank_first": 0.8845}, both) == "distill_first"  # exactly 0.25
    assert chain_order.choose({**means, "lowrank_first": 0.8700}, both) == "distill_first"
    assert chain_order.choose(means, {**both, "lowrank_first": False}) == "distill_first"  # misses a cost target
    with pytest.raises(ValueError, match="current order"):
        chain_order.choose({"lowrank_first": 0.9}, both)
