import pytest
import torch
from torch import nn

from lowcarb.train import (
    benchmark_latency,
    count_parameters,
    flops_per_example,
    inference_footprint,
    model_costs,
    size_on_disk_bytes,
)

from .conftest import TinyNet


def batch(n):
    return {"x": torch.randn(n, 4), "labels": torch.zeros(n, dtype=torch.long)}


def test_parameter_count_counts_tied_weights_once():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    assert count_parameters(model) == 2 * (64 + 8)
    model[1].weight = model[0].weight
    assert count_parameters(model) == 64 + 8 + 8
    model[1].bias.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 64 + 8


def test_size_on_disk_tracks_the_weights():
    small, big = nn.Linear(10, 10), nn.Linear(100, 100)
    assert 440 <= size_on_disk_bytes(small) < 440 + 1024  # 110 float32 + header
    assert size_on_disk_bytes(big) > 40_000
    assert size_on_disk_bytes(big.half()) < size_on_disk_bytes(nn.Linear(100, 100)) * 0.6


def test_flops_of_a_linear_layer():
    model = TinyNet()  # 4 -> 3: 2 * 4 * 3 FLOPs per example
    assert flops_per_example(model, batch(5)) == pytest.approx(24.0)


def test_latency_reports_percentiles_at_fixed_threads():
    before = torch.get_num_threads()
    out = benchmark_latency(TinyNet(), batch(32), threads=1, repeats=5, warmup=1)
    assert out["batch_size"] == 32 and out["threads"] == 1 and out["repeats"] == 5
    assert 0 < out["p50_ms"] <= out["p95_ms"]
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        benchmark_latency(TinyNet(), batch(1), threads=0)


def test_inference_footprint_counts_units():
    fp = inference_footprint(TinyNet(), batch(32), n_inferences=100, threads=1)
    assert fp.units == 128 and fp.unit == "inference"  # 4 whole batches of 32
    assert fp.closed and fp.duration_s > 0 and fp.energy_j >= 0


def test_model_costs_has_every_figure():
    costs = model_costs(TinyNet(), batch(1), batch(32), threads=1, repeats=3, n_inferences=64)
    for key in ("params", "size_bytes", "flops_per_example", "latency_b1_p50_ms", "latency_b1_p95_ms",
                "latency_b32_p50_ms", "latency_b32_p95_ms", "inference_energy_j",
                "inference_operational_g", "inference_embodied_g"):
        assert key in costs, key
    assert costs["params"] == 15 and costs["latency_b32_batch_size"] == 32
    assert costs["inference_footprint"]["units"] == 64


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


def test_int8_dynamic_model_keeps_its_parameter_count_and_flops():
    # torch.ao keeps int8 weights out of parameters() and its kernels out of FlopCounterMode:
    # the counts must still match the fp32 model's.
    model = _Net()
    fp32_params, fp32_flops = count_parameters(model), flops_per_example(model, batch(5))
    int8 = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    assert fp32_params == 4 * 6 + 6 + 6 * 3 + 3
    assert count_parameters(int8) == fp32_params
    assert count_parameters(int8, trainable_only=True) == 0
    assert fp32_flops == pytest.approx(2 * (4 * 6 + 6 * 3))
    assert flops_per_example(int8, batch(5)) == pytest.approx(fp32_flops)


def test_lowcarb_int8_buffers_count_as_parameters():
    # Weight-only int8 Linears (torchao tensors) and int8 embedding rows (buffers) count as the
    # parameters they replace.
    from lowcarb.compress import quantize
    from lowcarb.compress.distill import vocab
    from tests.compress.test_distill_losses import tiny_bert

    model = _Net()
    before = count_parameters(model)
    quantize.quantize_(model, quantize.WeightOnlyInt8())
    assert count_parameters(model) == before
    text = tiny_bert()
    vocab.apply(text, vocab.VocabConfig(keep=(0, 1, 2, 3), bits=8))
    emb = text.bert.embeddings.word_embeddings
    others = sum(p.numel() for n, p in text.named_parameters() if "word_embeddings" not in n)
    assert count_parameters(text) == others + 4 * emb.rows_int8.shape[1]
    text4 = tiny_bert()
    vocab.apply(text4, vocab.VocabConfig(keep=(0, 1, 2, 3), bits=4, group_size=16))
    assert count_parameters(text4) == others + 4 * text4.bert.embeddings.word_embeddings.embedding_dim


class _Attention(nn.Module):
    def forward(self, x):
        return nn.functional.scaled_dot_product_attention(x, x, x)


def test_fused_attention_flops_are_counted():
    # (batch 2, heads 4, tokens 16, head size 8)
    flops = flops_per_example(_Attention(), {"x": torch.randn(2, 4, 16, 8), "labels": torch.zeros(2)})
    # per example: 2 products (QK^T, AV) x 2 FLOPs per multiply-add x 4 heads x 16 x 16 x 8
    assert flops == pytest.approx(2 * 2 * 4 * 16 * 16 * 8)
