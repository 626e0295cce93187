"""The `lora` and `earlybird` stages inside real (tiny) recipe runs on the embedded digits set."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from lowcarb.adapt import peft_format
from lowcarb.models.cnn import DigitsCNN
from lowcarb.pipeline import recipe_from_dict, run_recipe
from lowcarb.store.runstore import RunStore

BASE = {
    "name": "tiny",
    "model": {"name": "cnn", "channels": [8, 16]},
    "data": {},
    "train": {"epochs": 1, "batch_size": 64, "lr": 3.0e-3, "seed": 0, "quiet": True},
    "evaluation": {"threads": 1, "latency_batch_sizes": [1], "inferences": 10},
}


def run(tmp_path, stages):
    recipe = recipe_from_dict({**BASE, "stages": stages})
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True,
                        store=RunStore(tmp_path / "runs.db"))
    assert result.status == "completed", result.error
    return result


def stage(result, name):
    return next(s for s in result.run["stages"] if s["name"] == name and not s.get("auto"))


def test_lora_stage_trains_adapters_saves_peft_and_merges(tmp_path):
    result = run(tmp_path, [
        "train",
        {"lora": {"r": 2, "alpha": 4, "target_modules": ["features.0", "features.3"],
                  "modules_to_save": ["classifier"], "max_steps": 5}},
    ])
    summary = stage(result, "lora")["summary"]
    assert summary["modules_changed"] == ["features.0", "features.3"]
    assert summary["steps"] == 5 and summary["merged"] is True
    assert summary["trainable_params"] < summary["params_before"]
    adapter = result.artifacts_dir / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["peft_type"] == "LORA"
    # The saved adapter goes onto a fresh CNN of the same shape.
    fresh = DigitsCNN((1, 8, 8), 10, channels=(8, 16))
    loaded = peft_format.load_adapter(fresh, adapter)
    assert loaded.modules_changed == ["features.0", "features.3"]


def test_a_disk_that_fills_while_saving_the_adapter_leaves_no_half_adapter(tmp_path, monkeypatch):
    def fills_after_the_weights(model, folder, **kwargs):
        (folder / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(peft_format, "save_peft", fills_after_the_weights)
    recipe = recipe_from_dict({**BASE, "stages": [{"lora": {"r": 2, "target_modules": ["features.0"],
                                                             "max_steps": 1}}]})
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=RunStore(tmp_path / "r.db"))
    assert result.status == "failed" and "No space left on device" in result.error
    assert "adapter" in result.error  # the message names the folder it could not write
    assert not (result.artifacts_dir / "adapter").exists()
    assert [p.name for p in result.artifacts_dir.iterdir() if "adapter" in p.name] == []


def test_lora_stage_bad_pattern_fails_the_run_with_a_listing(tmp_path):
    recipe = recipe_from_dict({**BASE, "stages": [{"lora": {"target_modules": ["query"]}}]})
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=RunStore(tmp_path / "r.db"))
    assert result.status == "failed"
    assert "matches no module" in result.error and "features.0" in result.error


def test_lora_stage_rejects_bad_rank_at_the_edge():
    with pytest.raises(ValueError, match="r"):
        recipe_from_dict({**BASE, "stages": [{"lora": {"r": 0}}]})


def test_earlybird_stage_on_cnn(tmp_path):
    result = run(tmp_path, [
        {"earlybird": {"channel_prune_ratio": 0.5, "mask_every_steps": 2, "window": 3,
                       "distance_threshold": 1.0, "max_search_steps": 20, "max_steps": 8,
                       "rewind": True}},
    ])
    summary = stage(result, "earlybird")["summary"]
    assert summary["ticket"]["stopped_early"] and summary["ticket"]["stop_step"] == 6
    assert summary["kept"] == {"channels": 12} and summary["total"] == {"channels": 24}
    assert summary["params_after"] < summary["params_before"]
    assert summary["steps"] == 8
    assert summary["search_window"]["energy_j"] > 0 and summary["train_window"]["energy_j"] > 0
    assert len(summary["ticket"]["distances"]) == 2


def test_earlybird_stage_without_rewind_trains_the_steps_the_search_left(tmp_path):
    result = run(tmp_path, [
        {"earlybird": {"channel_prune_ratio": 0.5, "mask_every_steps": 2, "window": 3,
                       "distance_threshold": 1.0, "max_search_steps": 20, "max_steps": 8,
                       "rewind": False}},
    ])
    summary = stage(result, "earlybird")["summary"]
    assert summary["ticket"]["stop_step"] == 6
    assert summary["steps"] == 8 - 6  # the search's 6 steps count against the budget of 8
    assert summary["kept"] == {"channels": 12}
    assert result.run["model"]["reloads"] is True, result.run["model"]


def test_earlybird_stage_when_the_search_used_the_whole_budget(tmp_path):
    result = run(tmp_path, [
        {"earlybird": {"channel_prune_ratio": 0.5, "mask_every_steps": 2, "window": 3,
                       "distance_threshold": 1.0, "max_search_steps": 20, "max_steps": 6,
                       "rewind": False}},
    ])
    summary = stage(result, "earlybird")["summary"]
    assert summary["ticket"]["stop_step"] == 6
    assert summary["steps"] == 0 and "whole training budget" in summary["stop_reason"]
    assert summary["kept"] == {"channels": 12}


def test_earlybird_stage_prunes_the_searched_weights_unless_it_rewinds(tmp_path):
    from lowcarb.compress.saved import load_compressed

    finals = {}
    for rewind in (True, False):
        result = run(tmp_path / str(rewind), [
            {"earlybird": {"channel_prune_ratio": 0.5, "mask_every_steps": 2, "window": 3,
                           "distance_threshold": 1.0, "max_search_steps": 20, "rewind": rewind,
                           "train": False}},
        ])
        finals[rewind] = load_compressed(result.artifacts_dir / "model").model.state_dict()
    # The same ticket on both (same seed and data), but only the searched copy has moved.
    assert finals[True].keys() == finals[False].keys()
    assert all(finals[True][k].shape == finals[False][k].shape for k in finals[True])
    assert not torch.equal(finals[True]["features.0.weight"], finals[False]["features.0.weight"])
