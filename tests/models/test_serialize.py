import json

import pytest
import torch

from lowcarb.models import ModelConfig, build_model, load_model, save_model
from lowcarb.train import forward


def same_logits(a, b, batch):
    a.eval()
    b.eval()
    with torch.no_grad():
        return torch.allclose(forward(a, batch), forward(b, batch), atol=1e-6)


def perturb(model):
    # Move weights (and BN running stats) away from their init so a reload from config alone
    # could not pass the test.
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.1)


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(name="cnn", channels=(4, 8), hidden_dim=16),
        ModelConfig(name="mlp", hidden_dim=16, num_hidden_layers=1),
    ],
    ids=["cnn", "mlp"],
)
def test_image_model_round_trip(digits, tmp_path, config):
    handle = build_model(config, digits)
    perturb(handle.model)
    folder = save_model(handle, tmp_path / "m")
    assert (folder / "model.safetensors").exists()
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))
    loaded = load_model(folder)
    assert (loaded.family, loaded.kind, loaded.num_labels, loaded.input_shape) == (
        handle.family, "image", 10, (1, 8, 8)
    )
    assert loaded.config == config
    batch = next(iter(digits.loader("dev", 8)))
    assert same_logits(handle.model, loaded.model, batch)


@pytest.mark.parametrize("tokenizer", ["bytes", "minilm"])
def test_text_transformer_round_trip(text_data, tmp_path, tokenizer):
    config = ModelConfig(name="transformer", d_model=32, num_heads=2, ffn_dim=64, max_length=32, tokenizer=tokenizer)
    handle = build_model(config, text_data)
    perturb(handle.model)
    loaded = load_model(save_model(handle, tmp_path / "m"))
    assert loaded.label_names == ("neg", "pos")
    batch = next(iter(text_data.loader("dev", 3, tokenizer=loaded.tokenizer)))
    assert same_logits(handle.model, loaded.model, batch)


def test_hf_round_trip_is_a_plain_hf_folder(text_data, tiny_hf_folder, tmp_path):
    from transformers import AutoModelForSequenceClassification

    handle = build_model(ModelConfig(name=str(tiny_hf_folder)), text_data)
    perturb(handle.model)
    folder = save_model(handle, tmp_path / "m")
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    loaded = load_model(folder)
    batch = next(iter(text_data.loader("dev", 3, tokenizer=loaded.tokenizer)))
    assert same_logits(handle.model, loaded.model, batch)
    # transformers alone reads it too
    plain = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    assert same_logits(handle.model, plain, batch)
    # and load_model reads plain HF folders (no lowcarb_model.json)
    (folder / "lowcarb_model.json").unlink()
    again = load_model(folder)
    assert again.family == "hf" and again.label_names == ("neg", "pos")


def test_mismatched_weights_are_reported(digits, tmp_path):
    handle = build_model(ModelConfig(name="cnn"), digits)
    folder = save_model(handle, tmp_path / "m")
    desc = json.loads((folder / "lowcarb_model.json").read_text())
    desc["config"]["hidden_dim"] = 99
    (folder / "lowcarb_model.json").write_text(json.dumps(desc))
    with pytest.raises(ValueError, match=r"(?s)does not match.*size mismatch"):
        load_model(folder)


def test_missing_folder_and_bad_description(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "lowcarb_model.json").write_text("{not json")
    with pytest.raises(ValueError, match="lowcarb_model.json"):
        load_model(tmp_path)
