"""AutoDistil (Xu et al., NeurIPS 2022): few-shot, task-agnostic search for a student under a
FLOPs budget.

    result = autodistil(teacher, unlabelled_loader, heldout_loader, AutoDistilConfig(flops_budget=0.5))
    student = result.extract()        # Hugging Face BERT, weights sliced out of its supernet

`space` (the student space and its sub-spaces, FLOPs per student), `supernet` (weight-sharing
sliced BERT, extraction), `search` (supernet training, budgeted search), `report` (plot, table).
"""

from lowcarb.search.autodistil.report import candidates_markdown, plot_candidates
from lowcarb.search.autodistil.search import (
    AutoDistilConfig,
    AutoDistilResult,
    Candidate,
    autodistil,
    autodistil_partitions,
    budget_flops,
    choose_partition,
    score,
    teacher_relations,
    train_supernet,
)
from lowcarb.search.autodistil.space import (
    StudentSpace,
    SubnetConfig,
    SubSpace,
    TeacherShape,
    split_space,
    student_space,
    subnet_flops,
)
from lowcarb.search.autodistil.supernet import SlicedLayerNorm, SlicedLinear, Supernet, extract

__all__ = [
    "AutoDistilConfig",
    "AutoDistilResult",
    "Candidate",
    "SlicedLayerNorm",
    "SlicedLinear",
    "StudentSpace",
    "SubSpace",
    "SubnetConfig",
    "Supernet",
    "TeacherShape",
    "autodistil",
    "autodistil_partitions",
    "budget_flops",
    "candidates_markdown",
    "choose_partition",
    "extract",
    "plot_candidates",
    "score",
    "split_space",
    "student_space",
    "subnet_flops",
    "teacher_relations",
    "train_supernet",
]
