"""AutoDistil: train one supernet per sub-space on unlabelled text, then search students under a
FLOPs budget without retraining, and extract the best.

    result = autodistil(teacher, unlabelled_loader, heldout_loader,
                        AutoDistilConfig(flops_budget=0.5, seq_len=64))   # half the teacher
    student = result.extract()          # a Hugging Face BertForSequenceClassification
    ... fine-tune `student` on the task (train.fit, or distill(..., LogitKD()))

Training (task-agnostic): every step samples one student of the sub-space uniformly at random and
trains the shared weights on MiniLMv2's Q-Q/K-K/V-V relation loss between the student's last
layer and the teacher's last layer (`compress.distill.minilmv2_loss`, traced through hooks); no
labels are read. Search: every student of the space whose FLOPs (from its configuration,
`subnet_flops`) fit the budget is scored by the same relation loss on held-out text, with the
teacher's relations computed once; the lowest loss wins. Sub-spaces without a student under the
budget are not trained. Each supernet's training and the search are ledger windows.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lowcarb.compress.distill.capture import Trace, trace
from lowcarb.compress.distill.losses import minilmv2_loss
from lowcarb.compress.distill.objectives import traced_objective
from lowcarb.compress.distill.teacher import TeacherLogits
from lowcarb.errors import ConfigError, DataError
from lowcarb.measure import track
from lowcarb.measure.config import CarbonConfig
from lowcarb.models.surgery import WithoutLabels
from lowcarb.search.autodistil.space import (
    StudentSpace,
    SubnetConfig,
    SubSpace,
    TeacherShape,
    split_space,
    student_space,
    subnet_flops,
)
from lowcarb.search.autodistil.supernet import Supernet, extract
from lowcarb.search.result import Objective, SearchResult, TrialRecord, window_summary
from lowcarb.train import TrainConfig, fit
from lowcarb.train.batches import Batch, model_inputs


@dataclass(frozen=True)
class AutoDistilConfig:
    """flops_budget: forward FLOPs per example at `seq_len` tokens; a value in (0, 1] is a
    fraction of the teacher's FLOPs. relation_heads None: the teacher's head count."""

    flops_budget: float
    seq_len: int = 128
    subspaces: int = 3
    choices_per_subspace: int = 2
    relation_heads: int | None = None
    steps_per_subspace: int = 300
    lr: float = 1e-4
    warmup_ratio: float = 0.1
    seed: int = 0
    max_candidates: int | None = None
    score_batches: int | None = None

    def __post_init__(self) -> None:
        if not self.flops_budget > 0:
            raise ConfigError(
                f"flops_budget must be > 0 (FLOPs per example, or a fraction <= 1 of the "
                f"teacher's), got {self.flops_budget}"
            )
        if self.seq_len < 1:
            raise ConfigError(f"seq_len must be >= 1 token, got {self.seq_len}")
        if self.steps_per_subspace < 1:
            raise ConfigError(f"steps_per_subspace must be >= 1, got {self.steps_per_subspace}")
        if self.max_candidates is not None and self.max_candidates < 1:
            raise ConfigError(f"max_candidates must be >= 1 or None, got {self.max_candidates}")


def budget_flops(budget: float, teacher: TeacherShape, seq_len: int) -> float:
    """The budget in FLOPs per example: values in (0, 1] are a fraction of the teacher's."""
    if budget <= 1.0:
        return budget * subnet_flops(teacher.config, seq_len, teacher.num_labels)
    return float(budget)


@dataclass(frozen=True)
class Candidate:
    """One searched student: its FLOPs per example and held-out relation loss (lower is better)."""

    config: SubnetConfig
    subspace: str
    flops: float
    score: float
    chosen: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"student": self.config.key, **self.config.to_dict(), "subspace": self.subspace,
                "flops": self.flops, "score": self.score, "chosen": self.chosen}


@dataclass
class SupernetRecord:
    """What training one sub-space's supernet did."""

    subspace: SubSpace
    supernet: Supernet
    steps: int
    train_loss: float | None
    teacher_forward_examples: int
    footprint: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**self.subspace.to_dict(), "steps": self.steps, "train_loss": self.train_loss,
                "teacher_forward_examples": self.teacher_forward_examples,
                "footprint": self.footprint}


@dataclass
class AutoDistilResult:
    space: StudentSpace
    subspaces: tuple[SubSpace, ...]
    budget_flops: float
    seq_len: int
    supernets: list[SupernetRecord]
    candidates: list[Candidate]
    search_footprint: dict[str, Any]
    skipped_subspaces: tuple[str, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen(self) -> Candidate:
        return next(c for c in self.candidates if c.chosen)

    def supernet_for(self, config: SubnetConfig) -> Supernet:
        for record in self.supernets:
            if config in record.subspace.configs:
                return record.supernet
        raise ValueError(f"no trained supernet holds student {config.key}")

    def extract(self, config: SubnetConfig | None = None) -> nn.Module:
        """The chosen (or given) student as a standalone Hugging Face model."""
        config = config or self.chosen.config
        return extract(self.supernet_for(config), config)

    @property
    def energy_j(self) -> float:
        """Supernet training plus search, in joules."""
        return sum(r.footprint["energy_j"] for r in self.supernets) + self.search_footprint["energy_j"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space.to_dict(),
            "subspaces": [s.to_dict() for s in self.subspaces],
            "skipped_subspaces": list(self.skipped_subspaces),
            "budget_flops": self.budget_flops,
            "seq_len": self.seq_len,
            "supernets": [r.to_dict() for r in self.supernets],
            "candidates": [c.to_dict() for c in self.candidates],
            "chosen": self.chosen.to_dict(),
            "search_footprint": self.search_footprint,
            "energy_j": self.energy_j,
            **self.notes,
        }

    def to_search_result(self, name: str = "autodistil", others: Sequence[AutoDistilResult] = ()) -> SearchResult:
        """The common search result: every student scored (held-out relation loss against FLOPs
        per example), the chosen one marked; the supernets' training and the scoring are the
        windows that did the work (shared by all students). `others`: the searches of the other
        sub-space counts `autodistil_partitions` ran; their students and windows are added, and
        this result's chosen student stays the chosen one."""
        results = (self, *others)
        trials = [
            TrialRecord(
                number=i,
                state="complete",
                params={"student": c.config.key, "subspace": c.subspace, "subspaces": len(r.subspaces)},
                metrics={"relation_loss": c.score, "flops": c.flops},
                footprint=None,
            )
            for i, (r, c) in enumerate((r, c) for r in results for c in r.candidates)
        ]
        return SearchResult.from_trials(
            "autodistil",
            name,
            (Objective("relation_loss", "minimize"), Objective("flops", "minimize")),
            trials,
            windows=[w for r in results for w in (*(s.footprint for s in r.supernets), r.search_footprint)],
            chosen=next(i for i, c in enumerate(self.candidates) if c.chosen),
            figures={
                "budget_flops": self.budget_flops,
                "student_flops": self.chosen.flops,
                "teacher_flops": self.notes.get("teacher_flops"),
                "seq_len": self.seq_len,
                "supernets_trained": sum(len(r.supernets) for r in results),
                "subspace_counts": ", ".join(str(len(r.subspaces)) for r in results),
                "skipped_subspaces": ", ".join(self.skipped_subspaces) or "none",
            },
        )


def _footprint(fp: Any) -> dict[str, Any]:
    # The common window summary (search.result), plus total_g as AutoDistil summaries had it.
    return {**window_summary(fp), "total_g": fp.total_g}


def train_supernet(
    supernet: Supernet,
    subspace: SubSpace,
    teacher: nn.Module,
    unlabelled_loader: Iterable[Batch],
    train: TrainConfig,
    *,
    relation_heads: int,
    seed: int = 0,
) -> tuple[int, float | None, int]:
    """Train the shared weights in place: each step one random student of `subspace` learns the
    teacher's last-layer self-attention relations. Returns (steps, last train loss, teacher
    examples)."""
    rng = random.Random(seed)
    counter = TeacherLogits(teacher)
    relation = lambda s, t, m: minilmv2_loss(s, t, m, relation_heads=relation_heads)  # noqa: E731
    with traced_objective(
        supernet, teacher, relation, weight=1.0, kd_temperature=None, hidden=False, counter=counter
    ) as objective:

        def loss_fn(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
            if model.training:
                supernet.set_active(rng.choice(subspace.configs))
            return objective(model, batch)

        result = fit(supernet, WithoutLabels(unlabelled_loader), None, train, loss_fn=loss_fn)
    supernet.set_active(subspace.largest)
    supernet.eval()
    return result.steps, result.train_loss, counter.forward_examples


@dataclass
class _HeldOut:
    inputs: Batch
    mask: Tensor | None
    teacher: Trace


@torch.no_grad()
def teacher_relations(teacher: nn.Module, loader: Iterable[Batch], limit: int | None) -> list[_HeldOut]:
    """The teacher's last-layer Q, K, V on held-out batches, computed once for every candidate."""
    teacher.eval()
    out = []
    with trace(teacher, hidden=False) as record:
        for index, batch in enumerate(loader):
            if limit is not None and index >= limit:
                break
            inputs = model_inputs(batch)
            teacher(**inputs)
            last = Trace(query=[record.query[-1]], key=[record.key[-1]], value=[record.value[-1]])
            out.append(_HeldOut(inputs, batch.get("attention_mask"), last))
    if not out:
        raise DataError("the held-out loader gave no batches: give some held-out text to score students")
    return out


@torch.no_grad()
def score(supernet: Supernet, config: SubnetConfig, held_out: list[_HeldOut], relation_heads: int) -> float:
    """Held-out MiniLMv2 relation loss of one student (mean over examples; lower is better)."""
    supernet.eval()
    supernet.set_active(config)
    total, count = 0.0, 0
    with trace(supernet, hidden=False) as record:
        for item in held_out:
            supernet(**item.inputs)
            loss = minilmv2_loss(record, item.teacher, item.mask, relation_heads=relation_heads)
            size = int(next(iter(item.inputs.values())).shape[0])
            total += float(loss) * size
            count += size
    return total / count


def _plan(
    teacher: nn.Module, config: AutoDistilConfig, space: StudentSpace | None = None
) -> tuple[StudentSpace, tuple[SubSpace, ...], float, dict[SubnetConfig, float], dict[str, list[SubnetConfig]]]:
    """The space, its sub-spaces, the budget in FLOPs, every student's FLOPs and the students
    under the budget per sub-space; ConfigError when the teacher cannot be split into
    `config.subspaces` sub-spaces or no student fits. Nothing is trained."""
    shape = TeacherShape.of(teacher)
    space = space or student_space(
        teacher, choices_per_subspace=config.choices_per_subspace, subspaces=config.subspaces,
        relation_heads=config.relation_heads,
    )
    subspaces = tuple(split_space(space, config.subspaces))
    budget = budget_flops(config.flops_budget, shape, config.seq_len)
    flops = {c: subnet_flops(c, config.seq_len, shape.num_labels) for s in subspaces for c in s.configs}
    fitting = {s.name: [c for c in s.configs if flops[c] <= budget] for s in subspaces}
    if not any(fitting.values()):
        smallest = min(flops.values())
        raise ConfigError(
            f"no student of the space fits {budget:.3g} FLOPs per example at {config.seq_len} tokens "
            f"(the smallest needs {smallest:.3g}); raise the FLOPs budget"
        )
    return space, subspaces, budget, flops, fitting


def autodistil(
    teacher: nn.Module,
    unlabelled_loader: Iterable[Batch],
    heldout_loader: Iterable[Batch],
    config: AutoDistilConfig,
    *,
    space: StudentSpace | None = None,
    carbon: CarbonConfig | None = None,
    progress: Any = None,
) -> AutoDistilResult:
    """Split the space, train the supernets that hold students under the budget, score those
    students on held-out text and mark the best. The teacher is not changed."""
    shape = TeacherShape.of(teacher)
    space, subspaces, budget, flops, fitting = _plan(teacher, config, space)
    relation_heads = space.relation_heads
    try:
        batches = len(unlabelled_loader)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError("the unlabelled loader must be sized (a DataLoader or a list of batches)") from None
    train = TrainConfig(
        epochs=max(1, math.ceil(config.steps_per_subspace / max(1, batches))),
        max_steps=config.steps_per_subspace, lr=config.lr,
        warmup_ratio=config.warmup_ratio, seed=config.seed, quiet=True,
    )
    records = []
    skipped = tuple(s.name for s in subspaces if not fitting[s.name])
    for index, subspace in enumerate(subspaces):
        if not fitting[subspace.name]:
            continue
        supernet = Supernet.from_teacher(teacher, subspace.largest)
        # K in the window names: autodistil_partitions runs a search per K, with sub-spaces of
        # the same names holding different students.
        with track(f"autodistil supernet {subspace.name} (K={config.subspaces})", unit="step",
                   units=config.steps_per_subspace, config=carbon) as fp:
            steps, loss, examples = train_supernet(
                supernet, subspace, teacher, unlabelled_loader,
                dataclasses.replace(train, seed=config.seed + index),
                relation_heads=relation_heads, seed=config.seed + index,
            )
        records.append(SupernetRecord(subspace, supernet, steps, loss, examples, _footprint(fp)))
        if progress:
            progress(f"supernet {subspace.name} ({subspace.largest.key}): {steps} steps, "
                     f"loss {loss if loss is None else round(loss, 4)}, {fp.energy_j:.0f} J")
    pool = [(s.name, c) for s in subspaces for c in fitting[s.name]]
    if config.max_candidates is not None and len(pool) > config.max_candidates:
        pool = sorted(random.Random(config.seed).sample(pool, config.max_candidates))
    supernets = {r.subspace.name: r.supernet for r in records}
    with track(f"autodistil search (K={config.subspaces})", unit="student", units=len(pool), config=carbon) as fp:
        held_out = teacher_relations(teacher, heldout_loader, config.score_batches)
        scored = [
            Candidate(c, name, flops[c], score(supernets[name], c, held_out, relation_heads))
            for name, c in pool
        ]
    best = min(range(len(scored)), key=lambda i: (scored[i].score, scored[i].flops))
    scored[best] = dataclasses.replace(scored[best], chosen=True)
    for record in records:
        record.supernet.set_active(record.subspace.largest)
    if progress:
        progress(f"searched {len(scored)} students in {fp.duration_s:.0f} s; chosen "
                 f"{scored[best].config.key} ({scored[best].flops:.3g} FLOPs, score {scored[best].score:.4f})")
    return AutoDistilResult(
        space=space, subspaces=subspaces, budget_flops=budget, seq_len=config.seq_len,
        supernets=records, candidates=scored, search_footprint=_footprint(fp),
        skipped_subspaces=skipped,
        notes={"relation_heads": relation_heads, "held_out_batches": len(held_out),
               "teacher_flops": subnet_flops(shape.config, config.seq_len, shape.num_labels)},
    )


def choose_partition(results: dict[int, AutoDistilResult]) -> int:
    """The partition (sub-space count K) whose chosen student has the lowest held-out relation
    loss; ties go to fewer FLOPs, then to the smaller K. Every result must have been scored on the
    same held-out text, so that their losses compare."""
    if not results:
        raise ConfigError("choose_partition needs at least one AutoDistil result")
    return min(results, key=lambda k: (results[k].chosen.score, results[k].chosen.flops, k))


def autodistil_partitions(
    teacher: nn.Module,
    unlabelled_loader: Iterable[Batch],
    heldout_loader: Iterable[Batch],
    config: AutoDistilConfig,
    partitions: Iterable[int] = (2, 3),
    *,
    carbon: CarbonConfig | None = None,
    progress: Any = None,
) -> tuple[int, dict[int, AutoDistilResult]]:
    """AutoDistil once per sub-space count K in `partitions` (`config.subspaces` is replaced),
    then the K whose chosen student has the lowest held-out relation loss (`choose_partition`).
    The number of sub-spaces decides which students share a supernet, and no K is best on every
    teacher and budget (on the SST-2 MiniLM under an L3 student's FLOPs, K = 3 trained no
    supernet holding the budget's largest students, and K = 2's chosen student had the lower
    held-out loss); choosing K on the held-out loss the search already uses reads no labelled
    data. Costs one AutoDistil search per K. A K that cannot work (the teacher cannot be split
    so, or no student fits the budget) is left out before anything trains; ConfigError when none
    works. Returns (chosen K, the result of every K that ran)."""
    ks = sorted(set(partitions))
    if not ks or any(k < 1 for k in ks):
        raise ConfigError(f"partitions must be sub-space counts >= 1, got {list(partitions)}")
    # Before any training: a K the teacher cannot be split into, or with no student under the
    # budget (fewer sub-spaces make the smallest student larger), is left out, not paid for.
    unworkable: dict[int, str] = {}
    for k in ks:
        try:
            _plan(teacher, dataclasses.replace(config, subspaces=k))
        except ConfigError as exc:
            unworkable[k] = str(exc)
    if len(unworkable) == len(ks):
        raise ConfigError("no sub-space count works: " + "; ".join(f"K={k}: {m}" for k, m in unworkable.items()))
    # held-out batches are read once per K: a one-shot iterator would leave later Ks nothing
    held_out = list(heldout_loader)
    results: dict[int, AutoDistilResult] = {}
    for k in ks:
        if k in unworkable:
            if progress:
                progress(f"AutoDistil with {k} sub-spaces left out: {unworkable[k]}")
            continue
        if progress:
            progress(f"AutoDistil with {k} sub-spaces")
        results[k] = autodistil(teacher, unlabelled_loader, held_out,
                                dataclasses.replace(config, subspaces=k), carbon=carbon, progress=progress)
    return choose_partition(results), results
