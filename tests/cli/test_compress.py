"""`lowcarb export-onnx`: a saved model folder in, an ONNX file and its onnxruntime latency out."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lowcarb.cli import main
from lowcarb.models import DigitsCNN, ModelConfig, ModelHandle, save_model

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="the onnx extra is not installed: pip install -e '.[onnx]'",
)


def _handle() -> ModelHandle:
    torch.manual_seed(0)
    net = DigitsCNN((1, 8, 8), num_labels=10).eval()
    return ModelHandle(net, None, "image", "cnn", ModelConfig(name="cnn"), 10, (), (1, 8, 8))


def test_export_onnx_verb_writes_int8_file_and_times_it(tmp_path, capsys):
    folder = save_model(_handle(), tmp_path / "model")
    out = tmp_path / "cnn.onnx"
    assert main(["export-onnx", str(folder), str(out), "--int8", "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert out.exists() and (tmp_path / "cnn.int8.onnx").exists()
    assert "max |onnxruntime - torch|" in printed and "p50" in printed


def test_export_onnx_verb_errors_are_one_line(tmp_path, capsys):
    assert main(["export-onnx", str(tmp_path / "missing"), str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lowcarb export-onnx: error:") and err.count("\n") == 1
    folder = save_model(_handle(), tmp_path / "model")
    assert main(["export-onnx", str(folder), str(tmp_path / "m.bin")]) == 2
    assert "should end in .onnx" in capsys.readouterr().err


def test_export_onnx_default_seq_len_fits_a_short_model(tmp_path, capsys):
    from lowcarb.models import ByteTokenizer, TextTransformer

    torch.manual_seed(0)
    net = TextTransformer(vocab_size=ByteTokenizer().vocab_size, num_labels=2, d_model=16, num_layers=1,
                          num_heads=2, ffn_dim=32, max_length=32, dropout=0.0,
                          pad_token_id=ByteTokenizer().pad_token_id)
    config = ModelConfig(name="transformer", d_model=16, num_layers=1, num_heads=2, ffn_dim=32, max_length=32)
    folder = save_model(ModelHandle(net, ByteTokenizer(), "text", "transformer", config, 2, ("a", "b")),
                        tmp_path / "model")
    assert main(["export-onnx", str(folder), str(tmp_path / "t.onnx"), "--batch-size", "2"]) == 0
    assert "seq 32" in capsys.readouterr().out
    assert main(["export-onnx", str(folder), str(tmp_path / "u.onnx"), "--seq-len", "64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seq-len 64" in err and "at most 32" in err
    assert not (tmp_path / "u.onnx").exists()
