"""Synchronized clocks and repeat-until-steady timing (lowcarb.train.timing), on a scripted clock
and a scripted asynchronous device, so the figures are exact and the tests never flake."""

import itertools
import random

import pytest
import torch

from lowcarb.train import timing
from lowcarb.train.timing import (
    DeviceClock,
    MachineLoad,
    RepeatConfig,
    busy_warning,
    machine_load,
    median_interval,
    time_repeats,
)


class ScriptedClock:
    """time.perf_counter for the timing module: advances only when told to."""

    def __init__(self):
        self.now_s = 100.0

    def __call__(self):
        return self.now_s

    def advance_ms(self, ms):
        self.now_s += ms / 1000.0


@pytest.fixture
def clock(monkeypatch):
    c = ScriptedClock()
    monkeypatch.setattr(timing.time, "perf_counter", c)
    return c


@pytest.fixture
def async_gpu(monkeypatch, clock):
    """A GPU whose work runs when the host synchronizes (as CUDA's queue does): calls queue
    milliseconds of work, torch.cuda.synchronize spends them on the clock."""
    queue = []

    def sync(device=None):
        clock.advance_ms(sum(queue))
        queue.clear()

    monkeypatch.setattr(torch.cuda, "synchronize", sync)
    return queue


def test_the_clock_waits_for_the_gpu_before_reading(async_gpu, clock):
    gpu = DeviceClock("cuda:0")
    t0 = gpu.now()
    async_gpu.append(7.0)  # a kernel launch returns at once; the work is still queued
    assert (gpu.now() - t0) * 1000 == pytest.approx(7.0)


def test_repeated_timings_include_the_gpu_work(async_gpu, clock):
    def launch():
        clock.advance_ms(0.1)  # the host side of the call: queueing
        async_gpu.append(4.0)  # the device side: the work

    t = time_repeats(launch, "cuda:0", RepeatConfig.fixed(10, warmup=2))
    assert t.repeats == 10 and t.warmup == 2 and t.device == "cuda:0"
    assert t.p50_ms == pytest.approx(4.1) and t.p95_ms == pytest.approx(4.1)


def test_the_median_interval_is_the_textbook_order_statistics():
    # n = 100 at 95 %: ranks 40 and 61 (Conover's table), values 1..100 in any order.
    values = [float(v) for v in range(100, 0, -1)]
    assert median_interval(values, 0.95) == (40.0, 61.0)
    assert median_interval([3.0, 1.0, 2.0], 0.95) == (1.0, 3.0)  # tiny samples: the range
    with pytest.raises(ValueError, match="no samples"):
        median_interval([])
    with pytest.raises(ValueError, match="confidence"):
        median_interval([1.0], 0.8)


def test_steady_timings_stop_once_the_interval_is_narrow(clock):
    t = time_repeats(lambda: clock.advance_ms(2.0), "cpu", RepeatConfig(min_repeats=10))
    assert t.stop_reason == "converged" and t.repeats == 10
    assert (t.p50_low_ms, t.p50_ms, t.p50_high_ms) == pytest.approx((2.0, 2.0, 2.0))
    assert t.p50_rel_ci == pytest.approx(0.0)


def test_spread_timings_run_until_the_budget(clock):
    # Half the calls take 1 ms, half 10 ms: the median never settles within +-3 %.
    durations = itertools.cycle([1.0, 10.0])
    t = time_repeats(lambda: clock.advance_ms(next(durations)), "cpu", RepeatConfig(budget_s=0.5))
    assert t.stop_reason == "budget"
    assert 0.5 <= sum(t.samples_ms) / 1000 < 0.52
    assert (t.p50_low_ms, t.p50_high_ms) == pytest.approx((1.0, 10.0)) and t.p50_rel_ci > 0.4


def test_the_interval_narrows_as_repeats_grow(clock):
    # Values drawn uniformly over 9.5..10.5 ms: more repeats, tighter interval, then converged.
    rng = random.Random(0)
    durations = iter(lambda: rng.uniform(9.5, 10.5), None)
    config = RepeatConfig(min_repeats=10, rel_ci=0.01, budget_s=1e9, max_repeats=5000)
    t = time_repeats(lambda: clock.advance_ms(next(durations)), "cpu", config)
    assert t.stop_reason == "converged" and t.repeats > 10
    assert t.p50_rel_ci <= 0.01
    short = time_repeats(lambda: clock.advance_ms(next(durations)), "cpu", RepeatConfig.fixed(10))
    assert short.p50_rel_ci > t.p50_rel_ci


def test_a_slow_call_gets_at_least_three_repeats_then_the_budget_stops_it(clock):
    t = time_repeats(lambda: clock.advance_ms(4000.0), "cpu", RepeatConfig(budget_s=5.0, warmup=1))
    assert t.stop_reason == "budget" and t.repeats == 3


def test_max_repeats_caps_the_count(clock):
    durations = itertools.cycle([1.0, 10.0])
    config = RepeatConfig(min_repeats=5, max_repeats=20, budget_s=1e9)
    t = time_repeats(lambda: clock.advance_ms(next(durations)), "cpu", config)
    assert t.stop_reason == "max_repeats" and t.repeats == 20


def test_repeat_settings_are_checked():
    with pytest.raises(ValueError, match="min_repeats <= max_repeats"):
        RepeatConfig(min_repeats=10, max_repeats=5)
    with pytest.raises(ValueError, match="budget_s"):
        RepeatConfig(budget_s=0)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        RepeatConfig.fixed(0)


def test_load_above_the_usable_cores_is_busy(monkeypatch):
    monkeypatch.setattr(timing.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (5.2, 3.0, 2.0))
    load = machine_load()
    assert load == MachineLoad(5.2, 2) and load.busy
    assert "load average 5.2 on 2 core(s)" in busy_warning(load, "latency")
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (1.5, 3.0, 2.0))
    assert not machine_load().busy and busy_warning(machine_load()) is None


def test_no_load_average_is_never_busy(monkeypatch):
    def unavailable():
        raise OSError("no load average")

    monkeypatch.setattr(timing.os, "getloadavg", unavailable)
    load = machine_load()
    assert load.load_1m is None and not load.busy
    assert load.to_dict() == {"load_1m": None, "cores": load.cores, "busy": False}


def test_timings_record_the_busier_load_of_start_and_end(monkeypatch, clock):
    loads = iter([(1.0, 0, 0), (9.0, 0, 0)])
    monkeypatch.setattr(timing.os, "getloadavg", lambda: next(loads))
    monkeypatch.setattr(timing.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    t = time_repeats(lambda: clock.advance_ms(1.0), "cpu", RepeatConfig.fixed(3))
    assert t.load.load_1m == 9.0 and t.load.busy
    assert t.to_dict()["load"] == {"load_1m": 9.0, "cores": 2, "busy": True}
