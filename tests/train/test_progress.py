"""Progress without a terminal: an estimate up front, then plain lines with step, loss and ETA."""

import io

import torch

from lowcarb.train import TrainConfig, fit
from lowcarb.train import progress as progress_module
from lowcarb.train.progress import PlainProgress, progress_bar


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_lines_estimate_then_report_every_interval_and_tenth():
    out, clock = io.StringIO(), Clock()
    bar = PlainProgress(out=out, clock=clock, every_s=30.0, estimate_after_s=5.0)
    task = bar.add_task("train", total=1000, status="")
    for step in range(1, 1001):
        clock.now = step * 0.5  # 0.5 s per step: 500 s in all
        bar.update(task, advance=1)
        if step % 10 == 0:
            bar.update(task, status=f"loss {1.0 / step:.4f}")
    bar.finish()
    lines = out.getvalue().splitlines()
    assert lines[0] == "train: 1000 steps, about 8 min in all (0.5 s per step over the first 10)"
    assert lines[1].startswith("train: step 70/1000 (7 %), loss 0.0167, elapsed 0:00:35, ETA 0:07:45")
    assert lines[-1] == "train: done, 1000/1000 steps in 0:08:20, loss 0.0010"
    # a line at most every 30 s (or at a new tenth): about 500 / 30 + 10 of them, not 1000
    assert 15 <= len(lines) <= 30
    assert all("ETA" in line for line in lines[1:-1])


def test_short_tasks_print_only_their_end():
    out, clock = io.StringIO(), Clock()
    bar = PlainProgress(out=out, clock=clock)
    task = bar.add_task("evaluate", total=20)
    for step in range(20):
        clock.now = step * 0.1
        bar.update(task, advance=1)
    bar.finish()
    assert out.getvalue() == "evaluate: done, 20/20 steps in 0:00:02\n"


def test_fit_without_a_terminal_prints_plain_lines(capsys, monkeypatch):
    # Shrink the thresholds so a test-sized training (a few steps) is "long".
    monkeypatch.setattr(progress_module, "ESTIMATE_AFTER_S", 0.0)
    monkeypatch.setattr(progress_module, "EVERY_S", 0.0)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    batches = [{"x": torch.randn(8, 4), "labels": torch.randint(0, 2, (8,))} for _ in range(6)]

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x)

    fit(Wrapped(), batches, None, TrainConfig(epochs=2, lr=1e-2))
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("train: 12 steps, about ")
    assert any(line.startswith("train: step 12/12 (100 %)") and "ETA 0:00:00" in line for line in printed)
    assert printed[-1].startswith("train: done, 12/12 steps in ") and "loss" in printed[-1]


def test_quiet_prints_nothing(capsys):
    with progress_bar(True) as bar:
        task = bar.add_task("train", total=3)
        bar.update(task, advance=3)
    assert capsys.readouterr().out == ""
