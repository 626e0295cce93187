"""`lowcarb.compress.export_folder`: a saved model folder to ONNX in one call (`export-onnx`)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lowcarb.compress.export_folder import SequenceTooLong, export_model_folder
from lowcarb.compress.export_onnx import OnnxExportConfig
from lowcarb.errors import ConfigError
from lowcarb.models import (
    ByteTokenizer,
    DigitsCNN,
    ModelConfig,
    ModelHandle,
    TextTransformer,
    save_model,
)

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="the onnx extra is not installed: pip install -e '.[onnx]'",
)


def _text_folder(tmp_path):
    torch.manual_seed(0)
    tok = ByteTokenizer()
    net = TextTransformer(vocab_size=tok.vocab_size, num_labels=2, d_model=16, num_layers=1, num_heads=2,
                          ffn_dim=32, max_length=32, dropout=0.0, pad_token_id=tok.pad_token_id)
    config = ModelConfig(name="transformer", d_model=16, num_layers=1, num_heads=2, ffn_dim=32, max_length=32)
    return save_model(ModelHandle(net, tok, "text", "transformer", config, 2, ("a", "b")), tmp_path / "text")


def test_an_image_model_folder_is_exported_checked_and_timed(tmp_path):
    torch.manual_seed(0)
    net = DigitsCNN((1, 8, 8), num_labels=10).eval()
    folder = save_model(ModelHandle(net, None, "image", "cnn", ModelConfig(name="cnn"), 10, (), (1, 8, 8)),
                        tmp_path / "cnn")
    done = export_model_folder(folder, tmp_path / "out" / "cnn.onnx", OnnxExportConfig(), batch_size=3)
    assert (tmp_path / "out" / "cnn.onnx").stat().st_size == done.summary.size_bytes > 0
    assert done.summary.max_abs_diff < 1e-4 and done.seq_len is None
    assert done.latency["batch_size"] == 3 and done.latency["p50_ms"] > 0


def test_a_text_model_takes_its_own_maximum_length_by_default(tmp_path):
    folder = _text_folder(tmp_path)
    done = export_model_folder(folder, tmp_path / "t.onnx", batch_size=2)
    assert done.seq_len == 32 and done.latency["batch_size"] == 2
    with pytest.raises(SequenceTooLong) as err:
        export_model_folder(folder, tmp_path / "u.onnx", seq_len=64)
    assert isinstance(err.value, ConfigError) and (err.value.seq_len, err.value.longest) == (64, 32)
    assert "takes at most 32 tokens" in str(err.value) and not (tmp_path / "u.onnx").exists()


def test_bad_arguments_fail_before_the_model_is_read(tmp_path):
    with pytest.raises(ConfigError, match="should end in .onnx"):
        export_model_folder(tmp_path / "missing", tmp_path / "m.bin")
    with pytest.raises(ConfigError, match="batch_size and seq_len must be >= 1"):
        export_model_folder(tmp_path / "missing", tmp_path / "m.onnx", batch_size=0)
