"""The sampling thread and the trapezoid integration: exact on scripted power traces."""

from __future__ import annotations

import threading
import time

import pytest

from lowcarb.measure import CarbonConfig, track
from lowcarb.measure.estimate import RamEstimateMeter
from lowcarb.measure.integrate import PowerIntegrator, Sampler

from .scripted import ScriptedProbes


def test_trapezoid_is_exact_for_piecewise_linear_trace():
    # 0 -> 10 W over 2 s, hold 10 W for 3 s, 10 -> 4 W over 1 s: 10 + 30 + 7 = 47 J
    integ = PowerIntegrator()
    for t, p in [(0, 0), (2, 10), (5, 10), (6, 4)]:
        integ.add(t, p)
    assert integ.energy_j == pytest.approx(47.0)
    assert integ.samples == 4


def test_integrator_rejects_bad_samples():
    integ = PowerIntegrator()
    integ.add(1.0, 5.0)
    with pytest.raises(ValueError, match="out of order"):
        integ.add(0.5, 5.0)
    with pytest.raises(ValueError, match="negative power"):
        integ.add(2.0, -1.0)


def test_sampling_thread_plus_final_partial_interval_gives_exact_integral():
    """RAM power 2 + 0.5 t W (scripted via resident memory), sampled by the real thread.

    Whatever number of ticks the thread manages, the window's energy must be the exact integral
    from the first to the last tick, the last one being the partial interval at close.
    """
    w_per_gb = 0.5
    probes = ScriptedProbes(step_s=0.25, rss_bytes=lambda t: (2.0 + 0.5 * t) / w_per_gb * 1e9)
    config = CarbonConfig(sample_interval_s=0.01)
    with track("trace", config=config, probes=probes, meters=[RamEstimateMeter(w_per_gb)]) as fp:
        time.sleep(0.15)
    assert probes.ticks >= 4  # the thread did sample
    duration = fp.duration_s
    assert duration == pytest.approx(0.25 * (probes.ticks - 1))
    exact = 2.0 * duration + 0.25 * duration**2
    assert fp.components["ram"].energy_j == pytest.approx(exact, rel=1e-12)


def test_sampler_stops_promptly_and_surfaces_errors():
    calls = []
    s = Sampler(10.0, lambda: calls.append(1))
    s.start()
    t0 = time.monotonic()
    s.stop()
    assert time.monotonic() - t0 < 1.0 and calls == []

    def boom():
        raise OSError("counter vanished")

    s = Sampler(0.001, boom)
    s.start()
    time.sleep(0.05)
    with pytest.raises(RuntimeError, match="counter vanished"):
        s.stop()
    assert not any(t.name == "lowcarb-sampler" and t.is_alive() for t in threading.enumerate())


def test_sampler_rejects_bad_interval():
    with pytest.raises(ValueError, match="> 0"):
        Sampler(0, lambda: None)
