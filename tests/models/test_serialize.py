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


# --- hostile model folders (issue 19 items 6, 9, 12) -------------------------------------------

import shutil  # noqa: E402

from lowcarb.errors import LowcarbError, ModelError  # noqa: E402


@pytest.fixture
def saved_cnn(digits, tmp_path):
    handle = build_model(ModelConfig(name="cnn", channels=(4, 8), hidden_dim=16), digits)
    return save_model(handle, tmp_path / "cnn")


def _edit_description(folder, **changes):
    path = folder / "lowcarb_model.json"
    payload = json.loads(path.read_text())
    for key, value in changes.items():
        if key.startswith("config."):
            payload["config"][key.removeprefix("config.")] = value
        else:
            payload[key] = value
    path.write_text(json.dumps(payload))


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"num_labels": -1}, r"num_labels must be a whole number >= 1, got -1"),
        ({"num_labels": "ten"}, r"num_labels must be a whole number >= 1, got 'ten'"),
        ({"input_shape": [1, -8, 8]}, r"input_shape must be positive whole numbers"),
        ({"config.hidden_dim": 4_000_000}, r"asks for .* parameters .* model.safetensors holds"),
        ({"config.channels": [4, 8, 16]}, r"lowcarb_model.json"),
        ({"family": "rnn"}, r"unknown model family 'rnn'"),
    ],
)
def test_edited_description_is_refused_before_allocating(saved_cnn, changes, expected):
    _edit_description(saved_cnn, **changes)
    with pytest.raises(ModelError, match=expected):
        load_model(saved_cnn)


def test_a_huge_size_is_refused_without_allocating_it(saved_cnn):
    import resource

    _edit_description(saved_cnn, **{"config.hidden_dim": 10**8})  # ~103 GB of weights as float32
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelError, match="lowcarb_model.json"):
        load_model(saved_cnn)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 500_000  # nothing near the size asked for was allocated


def test_truncated_safetensors_is_named(saved_cnn, tiny_hf_folder, tmp_path):
    weights = saved_cnn / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelError, match=r"model.safetensors.*(truncated|damaged)"):
        load_model(saved_cnn)
    hf = tmp_path / "hf"
    shutil.copytree(tiny_hf_folder, hf)
    (hf / "model.safetensors").write_bytes((hf / "model.safetensors").read_bytes()[:200])
    with pytest.raises(ModelError, match=r"hf/model.safetensors.*(truncated|damaged)"):
        load_model(hf)


def test_hf_folder_without_tokenizer_files_is_an_error(tiny_hf_folder, tmp_path, text_data):
    hf = tmp_path / "no-tokenizer"
    hf.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_hf_folder / name, hf / name)
    with pytest.raises(ModelError, match=r"no-tokenizer has no tokenizer files"):
        load_model(hf)
    with pytest.raises(ModelError, match="no tokenizer files"):
        build_model(ModelConfig(name=str(hf)), text_data)


def test_model_errors_are_lowcarb_errors(tmp_path):
    with pytest.raises(LowcarbError, match="not found"):
        load_model(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LowcarbError, match="config.json"):
        load_model(tmp_path / "empty")


def test_edited_hf_config_asking_for_gigabytes_is_refused(tiny_hf_folder, tmp_path, text_data):
    hf = tmp_path / "hf"
    shutil.copytree(tiny_hf_folder, hf)
    config = json.loads((hf / "config.json").read_text())
    config["intermediate_size"] = 50_000_000  # ~100 GB of FFN weights
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"config.json describes a model of .* GB as float32.*edited"):
        load_model(hf)
    with pytest.raises(ModelError, match="config.json describes"):
        build_model(ModelConfig(name=str(hf)), text_data)
