"""Early-bird pruned models (layers of different widths) save and reload with identical outputs."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lowcarb.compress import lowrank
from lowcarb.compress.saved import COMPRESSED_FILE, load_compressed, save_compressed
from lowcarb.models import DigitsCNN, ModelConfig, ModelHandle, load_minilm_tokenizer
from lowcarb.pipeline import recipe_from_dict, run_recipe
from lowcarb.prune import bert_structure, bn_channels, earlybird
from lowcarb.store.runstore import RunStore

torch.set_num_threads(1)


def _bert_handle() -> ModelHandle:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=40, hidden_size=24, num_hidden_layers=3, num_attention_heads=6,
                     intermediate_size=20, max_position_embeddings=16, num_labels=3)
    model = BertForSequenceClassification(cfg).eval()
    return ModelHandle(model, None, "text", "hf", ModelConfig(name="tiny-bert"), 3, ("a", "b", "c"))


def _bert_mask() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    heads = torch.rand(3, 6, generator=g) > 0.4
    ffn = torch.rand(3, 20, generator=g) > 0.5
    heads[:, 0] = ffn[:, 0] = True
    heads[1] = True  # one layer left whole: layers of different widths
    return {"heads": heads, "ffn": ffn}


def _bert_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[1, 6:] = 0
    return {"input_ids": torch.randint(0, 40, (4, 9), generator=g), "attention_mask": mask}


def _cnn_handle() -> ModelHandle:
    torch.manual_seed(0)
    net = DigitsCNN((1, 8, 8), 10, channels=(16, 32))
    with torch.no_grad():
        for bn in bn_channels.bn_layers(net).values():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(-1, 1)
    net.eval()
    return ModelHandle(net, None, "image", "cnn", ModelConfig(name="cnn", channels=(16, 32)), 10,
                       (), (1, 8, 8))


def _pruned(folder) -> dict:
    """The pruned widths the folder's transform log records ({"pruned": None} when none)."""
    log = json.loads((folder / COMPRESSED_FILE).read_text())["transforms"]
    widths = [r["structure"]["widths"] for r in log if r["transform"] == "earlybird"]
    return {"pruned": widths[-1] if widths else None}


def _ticket(masks: dict[str, torch.Tensor]) -> earlybird.EarlyBirdTicket:
    return earlybird.EarlyBirdTicket(masks=masks, stop_step=1, stopped_early=True,
                                     steps_per_epoch=1)


def test_pruned_bert_saves_and_reloads_identically(tmp_path):
    handle = _bert_handle()
    mask = _bert_mask()
    earlybird.apply(handle.model, _ticket(mask))
    folder = save_compressed(handle, tmp_path / "m")
    meta = _pruned(folder)
    assert meta["pruned"] == {"kind": "bert", "heads": mask["heads"].sum(1).tolist(),
                              "ffn": mask["ffn"].sum(1).tolist()}
    reloaded = load_compressed(folder)
    assert bert_structure.describe(reloaded.model) == bert_structure.describe(handle.model)
    with torch.inference_mode():
        a = handle.model(**_bert_inputs()).logits
        b = reloaded.model(**_bert_inputs()).logits
    assert torch.allclose(a, b, atol=1e-6)


def test_pruned_then_factorized_bert_reloads(tmp_path):
    handle = _bert_handle()
    earlybird.apply(handle.model, _ticket(_bert_mask()))
    lowrank.apply(handle.model, lowrank.LowRankConfig(param_ratio=0.5, targets=("*encoder*",)))
    reloaded = load_compressed(save_compressed(handle, tmp_path / "m"))
    with torch.inference_mode():
        a = handle.model(**_bert_inputs()).logits
        b = reloaded.model(**_bert_inputs()).logits
    assert torch.allclose(a, b, atol=1e-6)


def test_pruned_cnn_saves_and_reloads_identically(tmp_path):
    handle = _cnn_handle()
    keep = bn_channels.masks(handle.model, 0.5)
    earlybird.apply(handle.model, _ticket(keep))
    folder = save_compressed(handle, tmp_path / "m")
    meta = _pruned(folder)
    assert meta["pruned"]["kind"] == "bn_channels"
    assert sum(meta["pruned"]["channels"].values()) == int(keep["channels"].sum())
    reloaded = load_compressed(folder)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        a = handle.model(pixel_values=x)
        b = reloaded.model(pixel_values=x)
    assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)


def test_unpruned_model_records_no_structure(tmp_path):
    folder = save_compressed(_cnn_handle(), tmp_path / "m")
    assert _pruned(folder)["pruned"] is None


def test_restore_rejects_a_foreign_description():
    with pytest.raises(ValueError, match="kind"):
        earlybird.restore_structure(_cnn_handle().model, {"kind": "resnet"})
    with pytest.raises(ValueError, match="layers"):
        earlybird.restore_structure(_bert_handle().model,
                                    {"kind": "bert", "heads": [2], "ffn": [3]})
    with pytest.raises(ValueError, match="BatchNorm"):
        earlybird.restore_structure(_cnn_handle().model,
                                    {"kind": "bn_channels", "channels": {"x": 1}})


def test_earlybird_stage_final_model_reloads(tmp_path):
    recipe = recipe_from_dict({
        "name": "tiny",
        "model": {"name": "cnn", "channels": [8, 16]},
        "data": {},
        "train": {"epochs": 1, "batch_size": 64, "lr": 3.0e-3, "seed": 0, "quiet": True},
        "evaluation": {"threads": 1, "latency_batch_sizes": [1], "inferences": 10},
        "stages": [{"earlybird": {"channel_prune_ratio": 0.5, "mask_every_steps": 2, "window": 3,
                                  "distance_threshold": 1.0, "max_search_steps": 20,
                                  "max_steps": 4}}],
    })
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=RunStore(tmp_path / "r.db"))
    assert result.status == "completed", result.error
    model = result.run["model"]
    assert model["reload_error"] is None and model["reloads"] is True, model
    assert model["load_with"] == "lowcarb.compress.saved.load_compressed"
    meta = _pruned(result.artifacts_dir / "model")
    assert meta["pruned"]["kind"] == "bn_channels"


@pytest.mark.parametrize("rewind", [True, False])
def test_earlybird_stage_on_bert_final_model_reloads(tmp_path, rewind):
    words = ["good", "great", "fine", "bad", "awful", "poor", "movie", "plot", "the", "a"]
    g = torch.Generator().manual_seed(0)
    rows = ["text\tlabel"]
    for _ in range(48):
        picked = [words[i] for i in torch.randint(0, len(words), (5,), generator=g).tolist()]
        rows.append(f"{' '.join(picked)}\t{int(sum(w in words[:3] for w in picked) >= 2)}")
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "dev.tsv").write_text("\n".join(rows[:17]) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                        num_labels=2)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "bert")
    load_minilm_tokenizer().save_pretrained(tmp_path / "bert")
    recipe = recipe_from_dict({
        "name": "tiny-bert",
        "model": {"name": str(tmp_path / "bert")},
        "data": {"train": str(tmp_path / "train.tsv"), "dev": str(tmp_path / "dev.tsv"),
                 "test_fraction": 0.0, "max_length": 16},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1.0e-3, "seed": 0, "quiet": True},
        "evaluation": {"threads": 1, "latency_batch_sizes": [1], "inferences": 10},
        "report": "none",
        "stages": [{"earlybird": {"head_prune_ratio": 0.5, "ffn_prune_ratio": 0.4,
                                  "mask_every_steps": 1, "window": 2, "distance_threshold": 1.0,
                                  "max_search_steps": 3, "max_steps": 2 if rewind else 5,
                                  "rewind": rewind}}],
    })
    out = tmp_path / "run"
    result = run_recipe(recipe, out_dir=out, quiet=True, store=RunStore(tmp_path / "r.db"))
    assert result.status == "completed", result.error
    model = result.run["model"]
    assert model["reload_error"] is None and model["reloads"] is True, model
    meta = _pruned(result.artifacts_dir / "model")
    assert meta["pruned"]["kind"] == "bert" and meta["pruned"]["heads"] == [2, 2]
