"""Ledger windows: nesting, decorator, units, footprint round trip, real CPU work."""

from __future__ import annotations

import time

import pytest

from lowcarb.measure import CarbonConfig, Footprint, current_window_id, track

from .scripted import ScriptedProbes


@pytest.fixture
def config(tmp_path):
    return CarbonConfig(intensity_g_per_kwh=400.0, pue=1.5, powercap_root=str(tmp_path))


def test_nested_windows_record_their_parent(config):
    closed: list[Footprint] = []
    with track("outer", config=config, on_close=closed.append) as outer:
        assert current_window_id() == outer.id
        with track("inner", config=config, on_close=closed.append) as inner:
            assert current_window_id() == inner.id
        with track("inner2", config=config, on_close=closed.append) as inner2:
            pass
    assert current_window_id() is None
    assert [f.name for f in closed] == ["inner", "inner2", "outer"]
    assert inner.parent == outer.id and inner2.parent == outer.id and outer.parent is None
    assert all(f.closed for f in closed)


def test_operational_and_per_unit_figures(config):
    probes = ScriptedProbes(step_s=10.0, tree_cpu_s=lambda t: t)  # one busy core for 10 s
    with track("work", unit="sample", config=config, probes=probes) as fp:
        fp.units = 200
    assert fp.components["cpu"].energy_j == pytest.approx(40.0)  # 10 CPU-s x 4 W
    assert fp.operational_g == pytest.approx(40.0 / 3.6e6 * 400.0 * 1.5)
    assert fp.total_g == pytest.approx(fp.operational_g + fp.embodied_g)
    assert fp.g_per_unit == pytest.approx(fp.total_g / 200)
    assert fp.intensity_source == "user-set intensity"


def test_round_trip(config):
    with track("rt", unit="token", units=5, config=config, probes=ScriptedProbes()) as fp:
        pass
    d = fp.to_dict()
    back = Footprint.from_dict(d)
    assert back.to_dict() == d


def test_decorator_gives_a_window_per_call(config):
    seen: list[Footprint] = []

    @track("step", config=config, on_close=seen.append)
    def step(x: int) -> int:
        return x * 2

    assert step(2) == 4 and step(3) == 6
    assert len(seen) == 2 and seen[0].id != seen[1].id


def test_error_inside_window_is_recorded_and_reraised(config):
    seen: list[Footprint] = []
    with pytest.raises(RuntimeError, match="boom"), track("bad", config=config, on_close=seen.append):
        raise RuntimeError("boom")
    assert seen[0].error == "RuntimeError: boom" and seen[0].closed


def test_real_cpu_work_is_measured(config):
    with track("spin", config=CarbonConfig(powercap_root=config.powercap_root, sample_interval_s=0.05)) as fp:
        t0 = time.process_time()
        while time.process_time() - t0 < 0.3:
            pass
    assert fp.cpu_time_s >= 0.25
    assert fp.components["cpu"].energy_j >= 0.25 * 4.0
    assert fp.components["ram"].energy_j > 0
    assert fp.duration_s >= 0.25  # wall and CPU clocks tick apart: same slack as cpu_time_s


def test_bad_window_arguments():
    with pytest.raises(ValueError, match="non-empty name"):
        track("")
    with pytest.raises(ValueError, match="units must be >= 0"):
        track("x", units=-1)


def test_sampler_failure_warns_and_still_closes(config):
    class FlakyMeter:
        def __init__(self):
            self.calls = 0

        def start(self, tick):
            pass

        def sample(self, tick):
            raise OSError("counter vanished")

        def stop(self, tick):
            from lowcarb.measure import ComponentEnergy

            return {"cpu": ComponentEnergy(1.0, "measured: flaky")}

    cfg = CarbonConfig(intensity_g_per_kwh=1.0, sample_interval_s=0.01, powercap_root=config.powercap_root)
    with pytest.warns(RuntimeWarning, match="counter vanished"), track(
        "flaky", config=cfg, meters=[FlakyMeter()], probes=ScriptedProbes()
    ) as fp:
        time.sleep(0.1)
    assert fp.closed and fp.components["cpu"].energy_j == 1.0


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf"), True, "10"])
def test_units_set_inside_the_window_are_validated(config, bad):
    from lowcarb.errors import ConfigError

    with track("w", unit="sample", config=config, probes=ScriptedProbes()) as fp:
        with pytest.raises(ConfigError, match="units must"):
            fp.units = bad
        fp.units = 3  # a good value still works after a refused one
    assert fp.units == 3.0 and fp.g_per_unit == pytest.approx(fp.total_g / 3)
    with pytest.raises(ConfigError, match="units must"):
        track("x", units=bad)
    with pytest.raises(ConfigError, match="units must"):
        Footprint.from_dict({**fp.to_dict(), "units": bad})


def test_mean_resident_memory_is_recorded(config):
    gib = 2**30
    probes = ScriptedProbes(step_s=1.0, rss_bytes=lambda t: gib if t < 1 else 3 * gib)
    with track("mem", config=config, probes=probes) as fp:
        pass
    # one interval, 1 GiB at its start and 3 GiB at its end: a mean of 2 GiB
    assert fp.rss_gib_mean == pytest.approx(2.0)
    assert Footprint.from_dict(fp.to_dict()).rss_gib_mean == pytest.approx(2.0)
