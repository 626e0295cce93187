"""ONNX export: onnxruntime agrees with PyTorch, int8 shrinks the file, latency is measured."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from lowcarb.compress import export_onnx, quantize
from lowcarb.compress.export_onnx import OnnxExportConfig, export, onnx_latency, run_onnx

_MISSING = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"the onnx extra is not installed (missing {_MISSING}): pip install -e '.[onnx]'",
)


class _TinyText(nn.Module):
    """Embedding + masked mean + Linear: a (batch, sequence) token model like MiniLM."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.hidden = nn.Linear(32, 64)
        self.out = nn.Linear(64, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.emb(input_ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.out(torch.relu(self.hidden(pooled)))


def _text_batch(batch: int, seq: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, seq // 2 :] = 0
    return {
        "input_ids": torch.randint(0, 50, (batch, seq), generator=g),
        "attention_mask": mask,
        "labels": torch.zeros(batch, dtype=torch.long),
    }


def test_text_model_export_matches_torch_on_other_shapes(tmp_path):
    torch.manual_seed(0)
    model = _TinyText().eval()
    summary = export(model, _text_batch(4, 7, 0), tmp_path / "text.onnx")
    assert summary.max_abs_diff < 1e-4
    assert summary.input_names == ["input_ids", "attention_mask"]
    # dynamic batch and sequence axes: another shape runs and agrees
    other = _text_batch(9, 13, 1)
    with torch.no_grad():
        ref = model(other["input_ids"], other["attention_mask"]).numpy()
    got = run_onnx(summary.path, other)
    assert got.shape == (9, 3)
    assert abs(got - ref).max() < 1e-4


@pytest.mark.parametrize("bits", [8, 4])
def test_a_vocabulary_cut_bert_with_quantized_rows_exports(tmp_path, bits):
    from lowcarb.compress.distill import vocab
    from tests.compress.test_distill_losses import tiny_bert

    model = tiny_bert().eval()
    vocab.apply(model, vocab.VocabConfig(keep=tuple(range(30)), bits=bits, group_size=16))
    g = torch.Generator().manual_seed(0)
    summary = export(model, {"input_ids": torch.randint(1, 60, (2, 6), generator=g)}, tmp_path / "cut.onnx")
    other = {"input_ids": torch.randint(1, 60, (3, 9), generator=g)}  # dropped ids too
    with torch.no_grad():
        ref = model(**other).logits.numpy()
    assert abs(run_onnx(summary.path, other) - ref).max() < 1e-4


def test_int8_export_is_smaller_and_close(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 4)).eval()
    x = torch.randn(16, 256)
    summary = export(model, x, tmp_path / "mlp.onnx", OnnxExportConfig(int8=True))
    assert summary.path.endswith(".int8.onnx") and summary.int8
    assert summary.size_bytes < summary.fp32_size_bytes / 3
    assert summary.max_abs_diff < 1e-4  # the fp32 file is exact
    assert (
        summary.int8_max_abs_diff is not None and summary.int8_max_abs_diff > summary.max_abs_diff
    )
    with torch.no_grad():
        ref = model(x)
    got = torch.from_numpy(run_onnx(summary.path, x))
    assert quantize.sqnr_db(ref, got) > 20.0
    lat = onnx_latency(summary.path, x, threads=1, warmup=1, repeats=5)
    assert lat["batch_size"] == 16 and lat["repeats"] == 5 and lat["runtime"] == "onnxruntime"
    assert 0 < lat["p50_ms"] <= lat["p95_ms"]


def test_export_errors(tmp_path):
    model = nn.Sequential(nn.Linear(8, 2)).eval()
    with pytest.raises(ValueError, match=r"should end in \.onnx"):
        export(model, torch.randn(2, 8), tmp_path / "m.bin")
    quantize.quantize_(model, quantize.DynamicInt8())
    with pytest.raises(ValueError, match="no ONNX form"):
        export(model, torch.randn(2, 8), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="opset"):
        OnnxExportConfig(opset=7)
    with pytest.raises(FileNotFoundError, match="not found"):
        onnx_latency(tmp_path / "missing.onnx", torch.randn(2, 8))


def test_too_long_example_is_a_one_line_config_error_before_export(tmp_path):
    from lowcarb.errors import ConfigError
    from lowcarb.models import TextTransformer

    model = TextTransformer(vocab_size=300, num_labels=2, d_model=16, num_layers=1, num_heads=2,
                            ffn_dim=32, max_length=32, dropout=0.0, pad_token_id=0)
    assert export_onnx.max_sequence_length(model) == 32
    batch = {"input_ids": torch.ones(2, 64, dtype=torch.long), "attention_mask": torch.ones(2, 64, dtype=torch.long)}
    with pytest.raises(ConfigError, match=r"64 tokens.*at most 32"):
        export_onnx.export(model, batch, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_failure_is_a_model_error_and_leaves_no_file(tmp_path):
    from lowcarb.errors import ModelError

    class Untraceable(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            if input_ids.sum().item() > 0:  # data-dependent control flow: torch.export refuses it
                return input_ids.float()
            return attention_mask.float()

    batch = {"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4, dtype=torch.long)}
    with pytest.raises(ModelError) as err:
        export_onnx.export(Untraceable(), batch, tmp_path / "m.onnx")
    assert "\n" not in str(err.value) and "cannot be exported" in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_int8_weight_type_follows_the_cpus_int8_dot_product(monkeypatch):
    # Without VNNI, onnxruntime's u8 x s8 kernel saturates in int16: uint8 weights there.
    from lowcarb.compress import export_onnx

    monkeypatch.setattr(export_onnx, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert export_onnx.int8_weight_type() == "uint8"
    monkeypatch.setattr(export_onnx, "cpu_flags", lambda: {"avx2", "avx512_vnni"})
    assert export_onnx.int8_weight_type() == "int8"
    assert export_onnx.int8_weight_type("uint8") == "uint8"
    with pytest.raises(ValueError, match="weight_type"):
        OnnxExportConfig(weight_type="int4")
