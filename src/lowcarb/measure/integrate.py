"""Power integration and the sampling thread."""

from __future__ import annotations

import threading
from collections.abc import Callable


class PowerIntegrator:
    """Energy from power samples: the trapezoid rule between consecutive samples.

    The window adds a last sample at its close, so the final partial interval is integrated too;
    for a power trace that is linear between samples the result is the exact integral.
    """

    def __init__(self) -> None:
        self.energy_j = 0.0
        self._last: tuple[float, float] | None = None
        self.samples = 0

    def add(self, t_s: float, power_w: float) -> None:
        if power_w < 0:
            raise ValueError(f"negative power sample {power_w} W at t={t_s} s")
        if self._last is not None:
            t0, p0 = self._last
            if t_s < t0:
                raise ValueError(f"power samples out of order: t={t_s} s after t={t0} s")
            self.energy_j += 0.5 * (p0 + power_w) * (t_s - t0)
        self._last = (t_s, power_w)
        self.samples += 1


class Sampler:
    """A daemon thread that calls `callback()` every `interval_s` until stopped.

    Event.wait is used as the timer so that stop() returns at once instead of after a full
    interval; the callback's exceptions stop the thread and are re-raised by stop().
    """

    def __init__(self, interval_s: float, callback: Callable[[], None]) -> None:
        if interval_s <= 0:
            raise ValueError(f"sample interval must be > 0 s, got {interval_s}")
        self.interval_s = interval_s
        self._callback = callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lowcarb-sampler", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._callback()
            except BaseException as exc:  # noqa: BLE001 - surfaced in stop()
                self._error = exc
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"lowcarb sampler failed: {self._error}") from self._error
