"""benchmark_latency: repeats until steady (or a fixed count), the median's interval, the load,
the device and the precision it measured."""

import importlib

import pytest
import torch

from lowcarb.train import RepeatConfig, benchmark_latency

from .conftest import TinyNet

latency_module = importlib.import_module("lowcarb.train.latency")
timing_module = importlib.import_module("lowcarb.train.timing")


def batch(n):
    return {"x": torch.randn(n, 4), "labels": torch.zeros(n, dtype=torch.long)}


def test_a_fixed_count_times_exactly_that_many_passes():
    calls = []
    model = TinyNet()
    model.register_forward_hook(lambda *a: calls.append(1))
    out = benchmark_latency(model, batch(8), threads=1, warmup=2, repeats=7)
    assert out["repeats"] == 7 and len(calls) == 9 and out["stop_reason"] == "max_repeats"
    assert out["p50_low_ms"] <= out["p50_ms"] <= out["p50_high_ms"]
    assert out["device"] == "cpu" and out["precision"] == "fp32" and out["batch_size"] == 8


def test_by_default_it_repeats_until_the_interval_or_the_budget(monkeypatch):
    out = benchmark_latency(TinyNet(), batch(8), config=RepeatConfig(min_repeats=10, budget_s=0.5))
    assert out["stop_reason"] in ("converged", "budget", "max_repeats") and out["repeats"] >= 3
    if out["stop_reason"] == "converged":
        assert out["p50_rel_ci"] <= 0.03
    for key in ("load_1m", "cores", "busy", "p50_rel_ci", "mean_ms", "p95_ms"):
        assert key in out
    with pytest.raises(ValueError, match="not both"):
        benchmark_latency(TinyNet(), batch(1), repeats=3, config=RepeatConfig())


def test_a_busy_machine_is_flagged(monkeypatch):
    monkeypatch.setattr(timing_module.os, "getloadavg", lambda: (64.0, 0.0, 0.0))
    out = benchmark_latency(TinyNet(), batch(1), repeats=3)
    assert out["busy"] is True and out["load_1m"] == 64.0 and out["cores"] >= 1


def test_latency_runs_under_the_precisions_autocast():
    dtypes = []
    model = TinyNet()
    model.linear.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    benchmark_latency(model, batch(4), repeats=2, warmup=0, precision="bf16")
    assert set(dtypes) == {torch.bfloat16}
    out = benchmark_latency(model, batch(4), repeats=2, warmup=0)
    assert dtypes[-1] == torch.float32 and out["precision"] == "fp32"


def test_the_clock_synchronizes_the_models_device(monkeypatch):
    """Every timed pass is bracketed by synchronizations of the device the model is on."""
    synced = []
    monkeypatch.setattr(timing_module, "synchronize", lambda device: synced.append(torch.device(device)))
    model = TinyNet().to("meta")
    out = benchmark_latency(model, batch(4), repeats=5, warmup=1)
    assert out["device"] == "meta" and out["repeats"] == 5
    assert len(synced) >= 2 * 5 and set(synced) == {torch.device("meta")}
