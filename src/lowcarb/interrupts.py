"""SIGTERM and SIGHUP end a run the way Ctrl-C does: marked interrupted, finished stages kept.

`timeout`, Slurm, `docker stop` and a closed terminal send SIGTERM or SIGHUP, whose default action
kills the process on the spot: the run stays `running` in the store forever and its files stay
half-written. Inside `interrupt_on_signals()` those signals raise `Terminated`, a
KeyboardInterrupt, at the point the program was, so every `except KeyboardInterrupt` that already
handles Ctrl-C (mark the run interrupted, keep the finished stages, write the report) handles them.

A signal that was ignored when the block started stays ignored (`nohup` ignores SIGHUP on
purpose), and a second signal while the first is being handled is dropped, so the clean-up that
records the run is not itself interrupted. Outside the main thread this does nothing (Python
delivers signals to the main thread only).

This module imports nothing of lowcarb.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["HANDLED_SIGNALS", "Terminated", "interrupt_behind", "interrupt_on_signals"]

HANDLED_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal (SIGTERM, SIGHUP) rather than by Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name

    def __str__(self) -> str:
        return f"stopped by {self.signal_name}"


@contextlib.contextmanager
def interrupt_on_signals(signals: tuple[signal.Signals, ...] = HANDLED_SIGNALS) -> Iterator[None]:
    """Within the block, the given signals raise `Terminated` (once) instead of killing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {"raised": False}

    def handler(signum: int, frame: Any) -> None:
        if state["raised"]:
            return  # already stopping: let the clean-up finish
        state["raised"] = True
        raise Terminated(signum)

    previous: dict[signal.Signals, Any] = {}
    for sig in signals:
        before = signal.getsignal(sig)
        if before is signal.SIG_IGN:
            continue
        previous[sig] = before
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or `Terminated` that `exc` was raised while handling, if any.

    A library whose clean-up code fails when interrupted (Optuna 4's `_run_trial` reads a variable
    its `try` never set) replaces the KeyboardInterrupt with its own error; the interrupt is still
    in the exception's context chain, and it, not the library's error, is what happened.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
