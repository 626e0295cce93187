"""Adapter files: lowcarb format round trip, PEFT format round trip, PEFT's key names and fields."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lowcarb.adapt import lora, peft_format
from lowcarb.adapt.lora import LoraConfig
from tests.adapt.test_lora import bert_inputs, mixed_inputs, out, randomize_b, tiny_bert, tiny_mixed


def trained(make, targets=("query", "value"), saved=("classifier",), **kw):
    model = make()
    lora.apply(model, LoraConfig(r=4, alpha=8, target_modules=targets, modules_to_save=saved, **kw))
    randomize_b(model)
    with torch.no_grad():
        for p in model.get_submodule(saved[0]).parameters() if saved else []:
            p.add_(0.5)  # the saved head differs from the fresh base's
    return model


@pytest.mark.parametrize("save, fmt_file", [
    (peft_format.save_adapter, peft_format.LOWCARB_WEIGHTS),
    (peft_format.save_peft, peft_format.PEFT_WEIGHTS),
])
def test_round_trip_onto_fresh_base(tmp_path, save, fmt_file):
    model = trained(tiny_bert, targets=("query", "value", "word_embeddings"), use_rslora=True)
    expected = out(model, bert_inputs())
    save(model, tmp_path)
    assert (tmp_path / fmt_file).exists()
    fresh = tiny_bert()
    assert not torch.allclose(out(fresh, bert_inputs()), expected, atol=1e-4)
    summary = peft_format.load_adapter(fresh, tmp_path)  # format detected from the files
    assert torch.allclose(out(fresh, bert_inputs()), expected, atol=1e-6)
    assert sorted(summary.modules_changed) == sorted(lora.lora_layers(model))
    assert lora.config_of(fresh).scaling == pytest.approx(lora.config_of(model).scaling)


def test_round_trip_conv_and_embedding_model(tmp_path):
    model = trained(tiny_mixed, targets=("emb", "conv1", "conv2", "fc"))
    expected = out(model, mixed_inputs())
    peft_format.save_peft(model, tmp_path)
    fresh = tiny_mixed()
    peft_format.load_peft(fresh, tmp_path)
    assert torch.allclose(out(fresh, mixed_inputs()), expected, atol=1e-6)


def test_adapter_file_holds_only_adapter_and_saved_weights(tmp_path):
    model = trained(tiny_bert)
    peft_format.save_adapter(model, tmp_path)
    keys = set(load_file(str(tmp_path / peft_format.LOWCARB_WEIGHTS)))
    assert keys == set(lora.adapter_state_dict(model))
    assert all(".lora_" in k or k.startswith("classifier.") for k in keys)
    meta = json.loads((tmp_path / peft_format.LOWCARB_CONFIG).read_text())
    assert meta["format"] == "lowcarb-lora" and meta["config"]["r"] == 4


def test_peft_key_names_and_config_fields(tmp_path):
    # Key names and fields as written by peft 0.21 `PeftModel.save_pretrained` (LoRA on BERT
    # query/value/word_embeddings with modules_to_save=["classifier"]).
    model = trained(tiny_bert, targets=("query", "value", "word_embeddings"))
    peft_format.save_peft(model, tmp_path, base_model_name_or_path="minilm", task_type="SEQ_CLS")
    state = load_file(str(tmp_path / "adapter_model.safetensors"))
    p = "base_model.model."
    assert state[p + "bert.encoder.layer.0.attention.self.query.lora_A.weight"].shape == (4, 16)
    assert state[p + "bert.encoder.layer.0.attention.self.query.lora_B.weight"].shape == (16, 4)
    assert state[p + "bert.encoder.layer.1.attention.self.value.lora_A.weight"].shape == (4, 16)
    # PEFT stores embedding adapters as bare parameters: A (r, num_embeddings), B (dim, r).
    assert state[p + "bert.embeddings.word_embeddings.lora_embedding_A"].shape == (4, 40)
    assert state[p + "bert.embeddings.word_embeddings.lora_embedding_B"].shape == (16, 4)
    # modules_to_save weights are stored under the module's own name, without the wrapper prefix.
    assert state[p + "classifier.weight"].shape == (2, 16)
    assert p + "classifier.bias" in state
    assert all(k.startswith(p) for k in state)
    assert not any(".default" in k or "base_layer" in k for k in state)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "SEQ_CLS"
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and cfg["lora_dropout"] == 0.0
    assert cfg["use_rslora"] is False and cfg["bias"] == "none"
    assert cfg["modules_to_save"] == ["classifier"]
    assert "bert.encoder.layer.0.attention.self.query" in cfg["target_modules"]
    assert cfg["base_model_name_or_path"] == "minilm"


def test_reads_a_peft_written_adapter(tmp_path):
    # A folder laid out exactly as PEFT writes it (dict order, extra fields, auto-added "score").
    torch.manual_seed(5)
    p = "base_model.model.bert.encoder.layer."
    state = {}
    for i in range(2):
        state[f"{p}{i}.attention.self.query.lora_A.weight"] = torch.randn(2, 16)
        state[f"{p}{i}.attention.self.query.lora_B.weight"] = torch.randn(16, 2)
    state["base_model.model.classifier.weight"] = torch.randn(2, 16)
    state["base_model.model.classifier.bias"] = torch.randn(2)
    save_file(state, str(tmp_path / "adapter_model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "SEQ_CLS", "r": 2, "lora_alpha": 6, "lora_dropout": 0.1,
        "target_modules": ["query"], "modules_to_save": ["classifier", "classifier", "score"],
        "use_rslora": False, "bias": "none", "use_dora": False, "rank_pattern": {},
        "alpha_pattern": {}, "fan_in_fan_out": False, "peft_version": "0.21.2",
        "loftq_config": {}, "megatron_core": "megatron.core"}))
    model = tiny_bert()
    base_out = out(tiny_bert(), bert_inputs())
    summary = peft_format.load_peft(model, tmp_path)
    assert len(summary.modules_changed) == 2 and summary["modules_to_save"] == ["classifier"]
    layer = lora.lora_layers(model)["bert.encoder.layer.1.attention.self.query"]
    assert layer.scaling == pytest.approx(3.0)
    assert torch.equal(layer.lora_B.weight, state[f"{p}1.attention.self.query.lora_B.weight"])
    assert torch.equal(model.classifier.bias, state["base_model.model.classifier.bias"])
    assert not torch.allclose(out(model, bert_inputs()), base_out)


def test_unsupported_peft_options_rejected(tmp_path):
    model = trained(tiny_bert)
    peft_format.save_peft(model, tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="use_dora"):
        peft_format.load_peft(tiny_bert(), tmp_path)


def test_adapter_for_another_base_rejected(tmp_path):
    model = trained(tiny_mixed, targets=("fc",))
    peft_format.save_adapter(model, tmp_path)
    with pytest.raises(ValueError, match="matches no module"):
        peft_format.load_adapter(tiny_bert(), tmp_path)


def test_empty_folder_rejected(tmp_path):
    with pytest.raises(ValueError, match="holds no adapter"):
        peft_format.load_adapter(tiny_bert(), tmp_path)


def test_saving_a_plain_model_rejected(tmp_path):
    with pytest.raises(ValueError, match="LoRA"):
        peft_format.save_adapter(tiny_bert(), tmp_path)


def test_with_real_peft_if_installed(tmp_path):
    # peft is in the dev extra, so this cross-check runs in the default suite.
    import peft
    model = trained(tiny_bert, targets=("query", "value"))
    expected = out(model, bert_inputs())
    peft_format.save_peft(model, tmp_path / "ours", task_type="SEQ_CLS")
    theirs = peft.PeftModel.from_pretrained(tiny_bert(), str(tmp_path / "ours")).eval()
    assert torch.allclose(theirs(**bert_inputs()).logits, expected, atol=1e-6)
    theirs.save_pretrained(str(tmp_path / "theirs"))
    back = tiny_bert()
    peft_format.load_adapter(back, tmp_path / "theirs")
    assert torch.allclose(out(back, bert_inputs()), expected, atol=1e-6)
