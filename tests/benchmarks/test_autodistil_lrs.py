"""benchmarks/autodistil_minilm.py takes each student's fine-tuning lr from the lr sweep's table
only when the sweep tuned the same search and budget."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import autodistil_minilm  # noqa: E402


def _args(**changes):
    base = {"lr": None, "supernet_steps": 600, "supernet_lr": 2e-4, "subspaces": "2,3", "score_batches": 4,
            "finetune_steps": 500, "n": 8000}
    return argparse.Namespace(**{**base, **changes})


@pytest.fixture
def table(tmp_path, monkeypatch):
    path = tmp_path / "sweep.json"
    monkeypatch.setattr(autodistil_minilm, "LR_SWEEP", path)
    data = {"settings": autodistil_minilm.swept_settings(_args()), "search": {"student": "L5-H300-A12-F1152"},
            "decision": {"chosen": {"handmade": 1e-4, "autodistil": 2e-4}}}
    path.write_text(json.dumps(data))
    return data


def test_each_student_gets_its_swept_lr(table):
    lrs, read = autodistil_minilm.swept_lrs(_args(subspaces="3,2"))  # the same counts, another order
    assert lrs == {"handmade": 1e-4, "autodistil": 2e-4}
    assert read == table
    autodistil_minilm.check_swept_student(read, "L5-H300-A12-F1152")


def test_lr_given_overrides_the_sweep_for_both(table):
    assert autodistil_minilm.swept_lrs(_args(lr=3e-4)) == ({"handmade": 3e-4, "autodistil": 3e-4}, None)


def test_another_budget_or_search_refuses_the_swept_lrs(table):
    with pytest.raises(SystemExit, match="--finetune-steps 250 \\(swept with 500\\)"):
        autodistil_minilm.swept_lrs(_args(finetune_steps=250))
    with pytest.raises(SystemExit, match="tuned the lrs for L5-H300-A12-F1152"):
        autodistil_minilm.check_swept_student(table, "L4-H288-A12-F1024")


def test_without_a_sweep_both_keep_the_default(tmp_path, monkeypatch):
    monkeypatch.setattr(autodistil_minilm, "LR_SWEEP", tmp_path / "missing.json")
    assert autodistil_minilm.swept_lrs(_args()) == (
        {"handmade": autodistil_minilm.DEFAULT_LR, "autodistil": autodistil_minilm.DEFAULT_LR}, None)
