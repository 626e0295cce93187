"""distill(): every method trains the student towards the teacher; XtremeDistil's unfreezing."""

import copy

import pytest
import torch

from lowcarb.compress.distill import (
    GradualUnfreezing,
    HardLabels,
    Intermediate,
    Labels,
    LogitKD,
    Logits,
    MiniLM,
    Representation,
    StudentConfig,
    TeacherLogits,
    Unfreezer,
    XtremeDistil,
    build_student,
    distil_task_agnostic,
    distill,
    kd_loss,
    minilmv2_loss,
    select_layers,
    trace,
    unfreezing_groups,
)
from lowcarb.train import TrainConfig, fit
from tests.compress.test_distill_losses import tiny_bert


def batches(n: int = 6, size: int = 8, labelled: bool = True, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 60, (size, 6), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 4:] = 0
        batch = {"input_ids": ids, "attention_mask": mask}
        if labelled:
            batch["labels"] = (ids[:, 0] % 3).long()
        out.append(batch)
    return out


QUICK = TrainConfig(epochs=3, lr=3e-3, warmup_ratio=0.0, quiet=True)


def mean_kd(student, teacher, data) -> float:
    student.eval()
    with torch.no_grad():
        return sum(
            float(
                kd_loss(
                    student(**{k: b[k] for k in ("input_ids", "attention_mask")}).logits,
                    teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                )
            )
            for b in data
        ) / len(data)


def mean_relation(student, teacher, data) -> float:
    total = 0.0
    student.eval()
    with torch.no_grad(), trace(student) as ts, trace(teacher) as tt:
        for b in data:
            student(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            total += float(minilmv2_loss(ts, tt, b["attention_mask"], relation_heads=4))
    return total / len(data)


@pytest.mark.parametrize(
    "method",
    [
        LogitKD(temperature=2.0, alpha=1.0),
        LogitKD(alpha=0.5),
        MiniLM(relation_heads=4),
        MiniLM(version=1),
        Intermediate(),
    ],
    ids=["kd-soft", "kd-mixed", "minilm-v2", "minilm-v1", "tinybert"],
)
def test_distillation_moves_the_student_towards_the_teacher(method):
    teacher = tiny_bert(seed=0, layers=4)
    student, _ = build_student(teacher, StudentConfig(num_layers=2, init="fresh", seed=1))
    data = batches()
    teacher_state = copy.deepcopy(teacher.state_dict())
    before_kd, before_rel = mean_kd(student, teacher, data), mean_relation(student, teacher, data)
    summary = distill(student, teacher, data, data[:2], method, QUICK)
    after_kd, after_rel = mean_kd(student, teacher, data), mean_relation(student, teacher, data)
    if isinstance(method, LogitKD):
        assert after_kd < before_kd
    else:
        assert after_rel < before_rel
    assert summary.steps == 3 * len(data) and summary.dev is not None
    assert summary.params_after < summary.params_before
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[name]), f"the teacher changed: {name}"


def test_hard_labels_baseline_needs_no_teacher_passes():
    teacher = tiny_bert(seed=0)
    student, _ = select_layers(teacher, num_layers=2)
    summary = distill(student, teacher, batches(), None, HardLabels(), QUICK)
    assert summary.teacher_forward_examples == 0 and summary.method == "HardLabels"


def test_teacher_logits_run_the_teacher_once_per_distinct_example():
    teacher = tiny_bert(seed=0)
    data = batches(n=3)
    cache = TeacherLogits(teacher)
    for _ in range(2):
        student, _ = select_layers(teacher, num_layers=2)
        distill(student, teacher, data, None, LogitKD(), QUICK, teacher_logits=cache)
    assert cache.forward_examples == len(cache) == 3 * 8
    # Cached logits equal a fresh teacher pass, whatever the padding of the batch.
    b = data[0]
    padded = {
        k: torch.cat([v, torch.zeros(v.shape[0], 2, dtype=v.dtype)], 1) if v.dim() == 2 else v
        for k, v in b.items()
    }
    expected = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert torch.allclose(cache(padded), expected, atol=1e-5)
    assert cache.forward_examples == 3 * 8


def test_unfreezing_groups_go_from_the_head_down_to_the_embeddings():
    model = tiny_bert(layers=3)
    groups = unfreezing_groups(model)
    assert len(groups) == 4
    assert "classifier.weight" in groups[0] and "bert.pooler.dense.weight" in groups[0]
    assert all(n.startswith("bert.encoder.layer.2.") for n in groups[0][4:])
    assert all(n.startswith("bert.encoder.layer.1.") for n in groups[1])
    assert all(n.startswith("bert.embeddings.") for n in groups[3])
    names = [n for group in groups for n in group]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # a partition


def test_gradual_unfreezing_freezes_exactly_the_expected_parameters_at_each_step():
    model = tiny_bert(layers=3)
    groups = unfreezing_groups(model)
    unfreezer = Unfreezer(model, GradualUnfreezing(every_steps=2))
    seen: list[tuple[int, set[str]]] = []
    snapshots = {0: {n: p.detach().clone() for n, p in model.named_parameters()}}

    def on_step(step, m):
        # Parameters trainable during this step are the ones expected for step - 1.
        changed = {n for n, p in m.named_parameters() if not torch.equal(p, snapshots[step - 1][n])}
        seen.append((step, changed))
        unfreezer.on_step(step, m)
        expected = {n for g in groups[: min(len(groups), 1 + step // 2)] for n in g}
        assert {n for n, p in m.named_parameters() if p.requires_grad} == expected
        snapshots[step] = {n: p.detach().clone() for n, p in m.named_parameters()}
        return False

    params = list(model.parameters())
    config = TrainConfig(epochs=1, lr=1e-2, warmup_ratio=0.0, weight_decay=0.0, quiet=True)
    fit(model, batches(n=8), None, config, param_groups=[{"params": params}], on_step=on_step)
    for step, changed in seen:
        allowed = {n for g in groups[: min(len(groups), 1 + (step - 1) // 2)] for n in g}
        assert changed <= allowed, f"step {step}: frozen parameters changed: {changed - allowed}"
        assert changed, f"step {step}: nothing trained"
    unfreezer.release()
    assert all(p.requires_grad for p in model.parameters())


def test_unfreezer_keeps_parameters_that_were_frozen_before():
    model = tiny_bert(layers=2)
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    unfreezer = Unfreezer(model, GradualUnfreezing(every_steps=0))
    assert not model.bert.embeddings.word_embeddings.weight.requires_grad
    unfreezer.release()
    assert not model.bert.embeddings.word_embeddings.weight.requires_grad


def test_xtremedistil_runs_three_stages_on_labelled_and_unlabelled_text():
    teacher = tiny_bert(seed=0, layers=4)
    student, _ = build_student(
        teacher, StudentConfig(num_layers=2, hidden_size=16, num_heads=2, init="fresh")
    )
    labelled, unlabelled = batches(n=4), batches(n=6, labelled=False, seed=3)
    method = XtremeDistil((Representation(fraction=1), Logits(fraction=2), Labels(fraction=1)))
    summary = distill(
        student,
        teacher,
        labelled,
        labelled[:2],
        method,
        TrainConfig(epochs=4, lr=3e-3, warmup_ratio=0.0, quiet=True),
        unlabelled_loader=unlabelled,
    )
    assert [s["name"] for s in summary.stages] == ["Representation", "Logits", "Labels"]
    assert [s["steps"] for s in summary.stages] == [4, 8, 4] and summary.steps == 16
    # Groups: head + block 1, block 0, embeddings; by default all are unfrozen by mid-stage.
    assert [s["groups"] for s in summary.stages] == [3, 3, 3]
    assert [s["unfreeze_every"] for s in summary.stages] == [1, 1, 1]
    assert all(p.requires_grad for p in student.parameters())
    # The teacher-only stages on unlabelled text pull the student towards the teacher (the last,
    # hard-label stage then follows the labels, which this random teacher ignores).
    student, _ = build_student(
        teacher, StudentConfig(num_layers=2, hidden_size=16, num_heads=2, init="fresh")
    )
    before = mean_kd(student, teacher, labelled)
    distill(
        student,
        teacher,
        labelled,
        None,
        XtremeDistil((Representation(), Logits())),
        TrainConfig(epochs=4, lr=3e-3, warmup_ratio=0.0, quiet=True),
        unlabelled_loader=unlabelled,
    )
    assert mean_kd(student, teacher, labelled) < before


def test_task_agnostic_distillation_learns_relations_without_labels():
    teacher = tiny_bert(seed=0, layers=4)
    student, _ = build_student(teacher, StudentConfig(num_layers=2, init="fresh", seed=2))
    unlabelled = batches(labelled=False)
    before = mean_relation(student, teacher, unlabelled)
    summary = distil_task_agnostic(
        student, teacher, unlabelled, QUICK, MiniLM(relation_heads=4, kd=None)
    )
    assert mean_relation(student, teacher, unlabelled) < before
    assert summary.teacher_forward_examples == 3 * 6 * 8
    with pytest.raises(ValueError, match="relations only"):
        distil_task_agnostic(student, teacher, unlabelled, QUICK, MiniLM())


def test_method_errors_say_what_to_do():
    teacher = tiny_bert(seed=0, heads=4)
    student, _ = build_student(teacher, StudentConfig(num_layers=2, num_heads=2))
    with pytest.raises(ValueError, match="same number of heads"):
        distill(student, teacher, batches(n=1), None, MiniLM(version=1), QUICK)
    with pytest.raises(ValueError, match="XtremeDistil"):
        distill(
            student, teacher, batches(n=1), None, LogitKD(), QUICK, unlabelled_loader=batches(n=1)
        )
    with pytest.raises(ValueError, match="no 'labels'"):
        distill(student, teacher, batches(n=1, labelled=False), None, LogitKD(alpha=0.5), QUICK)
    with pytest.raises(ValueError, match="alpha"):
        LogitKD(alpha=2.0)
    with pytest.raises(ValueError, match="layer_map"):
        distill(student, teacher, batches(n=1), None, Intermediate(layer_map=(1, 2, 3)), QUICK)
    with pytest.raises(ValueError, match="must be >= 0"):
        Intermediate(attention_weight=-1.0)


def test_extra_loss_and_param_groups_reach_the_training_loop():
    teacher = tiny_bert(seed=0)
    student, _ = select_layers(teacher, num_layers=2)
    calls = []

    def extra(model):
        calls.append(1)
        return sum(p.pow(2).sum() for p in model.classifier.parameters()) * 0.0

    only_head = [{"params": list(student.classifier.parameters())}]
    body = student.bert.encoder.layer[0].output.dense.weight.detach().clone()
    distill(student, teacher, batches(n=2), None, LogitKD(), QUICK, extra_loss=extra, param_groups=only_head)
    assert len(calls) == 3 * 2
    # Only the head was in the optimiser: the body did not move.
    assert torch.equal(student.bert.encoder.layer[0].output.dense.weight, body)
    with pytest.raises(ValueError, match="XtremeDistil manages"):
        distill(student, teacher, batches(n=1), None, XtremeDistil(), QUICK, extra_loss=extra)


def test_hidden_state_matching_works_on_a_factorized_student():
    """A factorized model has no plain q/k/v Linears: attention matching cannot trace it, but
    hidden-state matching (attention_weight=0) can, and pulls its hidden states to the teacher's."""
    from lowcarb.compress import lowrank
    from lowcarb.compress.distill.capture import trace as trace_states

    teacher = tiny_bert(seed=0)
    student = copy.deepcopy(teacher)
    lowrank.apply(student, lowrank.LowRankConfig(param_ratio=0.3, targets=("*encoder*",)))
    data = batches()

    def hidden_gap() -> float:
        student.eval()
        with torch.no_grad(), trace_states(student, qkv=False) as ts, trace_states(teacher, qkv=False) as tt:
            total = 0.0
            for b in data:
                inputs = {k: b[k] for k in ("input_ids", "attention_mask")}
                student(**inputs)
                teacher(**inputs)
                total += sum(float((s - t).pow(2).mean()) for s, t in zip(ts.hidden, tt.hidden, strict=True))
        return total

    with pytest.raises(ValueError, match="no separate query/key/value"):
        distill(student, teacher, data[:1], None, Intermediate(), QUICK)
    before = hidden_gap()
    distill(student, teacher, data, None, Intermediate(attention_weight=0.0), QUICK)
    assert hidden_gap() < before
