"""`DistillSummary`: what a distillation run did."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class DistillSummary:
    """`params_before` is the teacher's parameter count, `params_after` the student's.
    `stages` holds one entry per training phase (XtremeDistil has three)."""

    method: str
    params_before: int
    params_after: int
    steps: int
    teacher_forward_examples: int
    dev: dict[str, float] | None = None
    stages: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    modules_changed: tuple[str, ...] = ("all",)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
