"""Progress of long work: rich bars on a terminal, plain lines in a log file, nothing when quiet.

With output going to a file (batch jobs, CI, `nohup`) a rich bar draws nothing useful: a 51-minute
training printed only its last line. There, after the first few seconds of a task, one line says
roughly how long it will take (measured on those first steps), then a line comes every
`every_s` seconds and at each tenth of the work (step, status such as the loss, elapsed, ETA).
Every task ends with one line (steps done, time taken, last status); a task shorter than the
first few seconds prints only that.

Both forms have the same two calls as `rich.progress.Progress`: `add_task(description, total,
status=...)` and `update(task, advance=..., status=...)`.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Plain lines: the estimate comes after this long (a steadier rate than the very first step,
# which pays for warm-up), then a line at most every EVERY_S seconds and at each tenth.
ESTIMATE_AFTER_S = 5.0
EVERY_S = 30.0


class _NullProgress:
    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def _clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class _Task:
    description: str
    total: float | None
    status: str
    started: float
    done: float = 0.0
    estimated: bool = False
    last_line: float = 0.0
    last_tenth: int = 0


class PlainProgress:
    """Progress as plain lines (see the module docstring); `clock` and `out` are for tests."""

    def __init__(
        self,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        every_s: float | None = None,
        estimate_after_s: float | None = None,
    ) -> None:
        self.out = out
        self.clock = clock
        self.every_s = EVERY_S if every_s is None else every_s
        self.estimate_after_s = ESTIMATE_AFTER_S if estimate_after_s is None else estimate_after_s
        self.tasks: list[_Task] = []

    def add_task(self, description: str, total: float | None = None, status: str = "", **_: Any) -> int:
        self.tasks.append(_Task(description, total, status, self.clock()))
        return len(self.tasks) - 1

    def update(self, task: int, advance: float = 0, status: str | None = None, **_: Any) -> None:
        t = self.tasks[task]
        t.done += advance
        if status is not None:
            t.status = status
        if advance:
            self._maybe_print(t)

    def finish(self) -> None:
        """One line per task: how far it got, in how long, with its last status."""
        for t in self.tasks:
            elapsed = self.clock() - t.started
            steps = f"{t.done:g}/{t.total:g}" if t.total else f"{t.done:g}"
            self._print(
                f"{t.description}: done, {steps} steps in {_clock_text(elapsed)}"
                + (f", {t.status}" if t.status else "")
            )

    def _maybe_print(self, t: _Task) -> None:
        now = self.clock()
        elapsed = now - t.started
        if elapsed < self.estimate_after_s or not t.done:
            return
        rate = elapsed / t.done  # seconds per step so far
        if not t.estimated:
            t.estimated, t.last_line = True, now
            if t.total:
                self._print(
                    f"{t.description}: {t.total:g} steps, about {_duration_text(rate * t.total)} "
                    f"in all ({rate:.3g} s per step over the first {t.done:g})"
                )
            return
        tenth = math.floor(10 * t.done / t.total) if t.total else 0
        if now - t.last_line < self.every_s and tenth <= t.last_tenth:
            return
        t.last_line, t.last_tenth = now, tenth
        where = f"step {t.done:g}"
        eta = ""
        if t.total:
            where += f"/{t.total:g} ({100 * t.done / t.total:.0f} %)"
            eta = f", ETA {_clock_text(rate * (t.total - t.done))}"
        status = f", {t.status}" if t.status else ""
        self._print(f"{t.description}: {where}{status}, elapsed {_clock_text(elapsed)}{eta}")

    def _print(self, line: str) -> None:
        out = self.out if self.out is not None else sys.stdout
        print(line, file=out, flush=True)


def _rich_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


@contextlib.contextmanager
def progress_bar(quiet: bool) -> Iterator[Any]:
    """Nothing when quiet; a rich bar when standard output is a terminal; plain lines otherwise."""
    if quiet:
        yield _NullProgress()
        return
    if sys.stdout.isatty():
        with _rich_progress() as progress:
            yield progress
        return
    plain = PlainProgress()
    yield plain
    plain.finish()  # not after an error: the work did not end, the error says so
