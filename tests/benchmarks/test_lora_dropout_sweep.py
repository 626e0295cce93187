"""The LoRA dropout sweep's decision rule (benchmarks/sweeps/lora_dropout.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "sweeps"))
import lora_dropout  # noqa: E402


@pytest.mark.parametrize(
    "no_dropout, with_dropout, chosen",
    [(0.8905, 0.879, 0.0), (0.875, 0.879, 0.0), (0.874, 0.879, 0.0), (0.8735, 0.879, 0.1),
     (0.85, 0.879, 0.1)],
)
def test_no_dropout_unless_it_loses_more_than_half_a_point(no_dropout, with_dropout, chosen):
    assert lora_dropout.choose({0.0: no_dropout, 0.1: with_dropout}) == chosen
