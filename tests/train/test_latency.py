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


def _plain_and_merged_lora(build):
    """Two copies of one model; LoRA trained a few steps on the second, then merged away."""
    from lowcarb.adapt import lora
    from lowcarb.train import TrainConfig, fit

    torch.manual_seed(0)
    plain = build()
    torch.manual_seed(0)
    tuned = build()
    lora.apply(tuned, lora.LoraConfig(r=4, target_modules=("query", "value"), modules_to_save=("classifier",)))
    g = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(5, 100, (8, 12), generator=g),
                "labels": torch.randint(0, 2, (8,), generator=g)} for _ in range(4)]
    fit(tuned, batches, None, TrainConfig(lr=1e-2, quiet=True))
    merged = lora.merge_and_unload(tuned)
    for p in merged.parameters():
        p.requires_grad_(True)  # as the lora stage leaves it
    return plain, merged, batches[0]


def test_a_merged_lora_model_is_the_plain_model_again():
    """Issue 19 item 16: a merged LoRA MiniLM timed 3x slower than plain MiniLM in a busy run.
    Nothing of LoRA is left to make it slower: same modules, same tensor layouts."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=2)
    plain, merged, _ = _plain_and_merged_lora(lambda: BertForSequenceClassification(config))
    assert [type(m) for m in merged.modules()] == [type(m) for m in plain.modules()]
    shapes = {n: (p.shape, p.stride(), p.dtype, p.is_contiguous()) for n, p in plain.state_dict().items()}
    assert {n: (p.shape, p.stride(), p.dtype, p.is_contiguous()) for n, p in merged.state_dict().items()} == shapes
    assert not any(name.startswith("lowcarb") or "lora" in name for name, _ in merged.named_modules())


@pytest.mark.slow
def test_merged_lora_minilm_times_like_plain_minilm_in_the_same_run():
    """The reported case on MiniLM itself: timed alternately in one process (so machine load
    falls on both alike), the medians agree within the noise."""
    from lowcarb.models import load_hf_classifier, minilm_folder

    plain, merged, batch = _plain_and_merged_lora(lambda: load_hf_classifier(minilm_folder(), num_labels=2)[0])
    one = {k: v[:1] for k, v in batch.items()}
    p50 = {"plain": [], "merged": []}
    for _ in range(3):
        for name, model in (("plain", plain), ("merged", merged)):
            p50[name].append(benchmark_latency(model, one, config=RepeatConfig(budget_s=3))["p50_ms"])
    ratio = sorted(p50["merged"])[1] / sorted(p50["plain"])[1]
    assert 0.8 < ratio < 1.25, p50
