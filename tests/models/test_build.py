import pytest
import torch

from lowcarb.models import ByteTokenizer, ModelConfig, build_model, minilm_folder
from lowcarb.train import forward


def inputs(handle, data, n=4):
    return next(iter(data.loader("train", n, tokenizer=handle.tokenizer)))


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_image_models_give_logits_per_class(digits, name):
    handle = build_model(ModelConfig(name=name), digits)
    assert handle.kind == "image" and handle.family == name and handle.tokenizer is None
    assert forward(handle.model, inputs(handle, digits)).shape == (4, 10)


@pytest.mark.parametrize("tokenizer", ["bytes", "minilm"])
def test_text_transformer(text_data, tokenizer):
    handle = build_model(ModelConfig(name="transformer", d_model=32, num_heads=2, ffn_dim=64, tokenizer=tokenizer, max_length=32), text_data)
    assert handle.kind == "text" and handle.family == "transformer"
    batch = inputs(handle, text_data)
    assert forward(handle.model, batch).shape == (4, 2)


def test_transformer_ignores_padding(text_data):
    handle = build_model(ModelConfig(name="transformer", d_model=32, num_heads=2, ffn_dim=64, dropout=0.0), text_data)
    model = handle.model.eval()
    tok = ByteTokenizer()
    alone = tok(["short"], max_length=32)
    padded = tok(["short", "a much longer text than the other"], max_length=32)
    with torch.no_grad():
        a = model(**alone)[0]
        b = model(**padded)[0]
    assert torch.allclose(a, b, atol=1e-5)


def test_same_seed_same_init(digits):
    a = build_model(ModelConfig(), digits, seed=7).model
    b = build_model(ModelConfig(), digits, seed=7).model
    c = build_model(ModelConfig(), digits, seed=8).model
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.classifier[-1].weight, c.classifier[-1].weight)


def test_wrong_model_for_the_data_is_explained(digits, text_data):
    with pytest.raises(ValueError, match="reads images.*text data"):
        build_model(ModelConfig(name="cnn"), text_data)
    with pytest.raises(ValueError, match="reads text.*image data"):
        build_model(ModelConfig(name="transformer"), digits)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        build_model(ModelConfig(name="resnet"), text_data)


def test_folder_without_config_is_explained(text_data, tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        build_model(ModelConfig(name=str(tmp_path)), text_data)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="tokenizer"):
        ModelConfig(tokenizer="spm")  # type: ignore[arg-type]


def test_minilm_is_offline_and_gets_a_new_head(text_data):
    assert (minilm_folder() / "model.safetensors").exists()
    handle = build_model(ModelConfig(name="minilm"), text_data)
    assert handle.family == "hf" and handle.num_labels == 2
    assert handle.model.config.id2label == {0: "neg", 1: "pos"}
    assert forward(handle.model, inputs(handle, text_data, 2)).shape == (2, 2)


def test_hf_folder_head_resized_to_the_data(text_data, tiny_hf_folder):
    handle = build_model(ModelConfig(name=str(tiny_hf_folder)), text_data)
    assert handle.model.config.num_labels == 2  # folder had 3 labels
    assert forward(handle.model, inputs(handle, text_data)).shape == (4, 2)


def test_byte_tokenizer_round_trip_and_padding():
    tok = ByteTokenizer()
    out = tok(["héllo", ""], max_length=10)
    assert out["input_ids"].shape == (2, 7)  # [CLS] + 6 UTF-8 bytes
    assert out["attention_mask"][1].tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert tok.decode(out["input_ids"][0].tolist()) == "héllo"
    assert tok(["abcdefgh"], max_length=4)["input_ids"].shape == (1, 4)
