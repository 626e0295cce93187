"""Saving a transformed model as a lowcarb model folder, and rebuilding it from the folder alone."""

from __future__ import annotations

import pytest
import torch

from lowcarb.compress import lowrank, quantize
from lowcarb.compress.saved import is_compressed, load_compressed, save_compressed
from lowcarb.models import DigitsCNN, ModelConfig, ModelHandle, load_model
from lowcarb.models.transforms import record


def _cnn_handle() -> ModelHandle:
    torch.manual_seed(0)
    net = DigitsCNN((1, 8, 8), num_labels=10).eval()
    return ModelHandle(net, None, "image", "cnn", ModelConfig(name="cnn"), 10, (), (1, 8, 8))


def _tiny_bert_handle() -> ModelHandle:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=2,
    )  # fmt: skip
    model = BertForSequenceClassification(config).eval()
    return ModelHandle(model, None, "text", "hf", ModelConfig(name="tiny-bert"), 2, ("neg", "pos"))


def test_factorized_and_static_int8_cnn_round_trip(tmp_path):
    handle = _cnn_handle()
    lowrank.apply(handle.model, lowrank.LowRankConfig(param_ratio=0.5))
    calib = [{"pixel_values": torch.rand(16, 1, 8, 8) * 16} for _ in range(2)]
    summary_q = quantize.quantize_(handle.model, quantize.StaticInt8(), calibration=calib)
    handle.model = summary_q.model
    # The model's transform log says what to rebuild: factorization, then static int8.
    folder = save_compressed(handle, tmp_path / "m")
    assert is_compressed(folder) and not (folder / "model.safetensors").exists()
    reloaded = load_compressed(folder)
    assert reloaded.family == "cnn" and reloaded.input_shape == (1, 8, 8)
    x = torch.rand(5, 1, 8, 8) * 16
    with torch.inference_mode():
        assert torch.equal(reloaded.model(pixel_values=x), handle.model(pixel_values=x))
    # a plain load of the folder fails loudly instead of returning random weights
    with pytest.raises((FileNotFoundError, ValueError, OSError)):
        load_model(folder)


def test_static_reload_needs_an_example(tmp_path):
    # quantize_ always records the example's shapes; a record without them cannot be re-traced.
    handle = _cnn_handle()
    record(handle.model, quantize.StaticInt8(), {"library": "torch.ao", "backend": "x86"})
    folder = save_compressed(handle, tmp_path / "m")
    with pytest.raises(ValueError, match="example"):
        load_compressed(folder)


def test_factorized_dynamic_int8_hugging_face_round_trip(tmp_path):
    handle = _tiny_bert_handle()
    lowrank.apply(handle.model, lowrank.LowRankConfig(param_ratio=0.5, targets=("*encoder*",)))
    quantize.quantize_(handle.model, quantize.DynamicInt8())
    folder = save_compressed(handle, tmp_path / "m")
    reloaded = load_compressed(folder)
    assert reloaded.family == "hf" and reloaded.label_names == ("neg", "pos")
    ids = torch.randint(0, 60, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    with torch.inference_mode():
        a = handle.model(input_ids=ids, attention_mask=mask).logits
        b = reloaded.model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(a, b)


def test_smoothed_dynamic_int8_hugging_face_round_trip(tmp_path):
    # SmoothedLinear wraps BERT's Linears: the saver reads their shapes (bert_structure.describe).
    handle = _tiny_bert_handle()
    g = torch.Generator().manual_seed(0)
    calib = [
        {"input_ids": torch.randint(0, 60, (4, 9), generator=g), "attention_mask": torch.ones(4, 9, dtype=torch.long)}
        for _ in range(3)
    ]
    quantize.quantize_(handle.model, quantize.DynamicInt8(smooth_alpha=0.5), calibration=calib)
    folder = save_compressed(handle, tmp_path / "m")
    reloaded = load_compressed(folder)
    ids, mask = calib[0]["input_ids"], calib[0]["attention_mask"]
    with torch.inference_mode():
        a = handle.model(input_ids=ids, attention_mask=mask).logits
        b = reloaded.model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(a, b)


def test_load_compressed_needs_the_metadata(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_compressed"):
        load_compressed(tmp_path)
