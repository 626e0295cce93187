"""The `lowrank` and `quantize` stages inside real (tiny) recipe runs on the embedded digits set,
and the compress-minilm recipe's validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lowcarb.compress.saved import load_compressed
from lowcarb.pipeline import load_recipe, recipe_from_dict, run_recipe
from lowcarb.store.runstore import RunStore

REPO = Path(__file__).resolve().parents[3]
BASE = {
    "name": "tiny",
    "model": {"name": "cnn", "channels": [8, 16]},
    "data": {},
    "train": {"epochs": 1, "batch_size": 64, "lr": 3.0e-3, "seed": 0, "quiet": True},
    "evaluation": {"threads": 1, "latency_batch_sizes": [1], "inferences": 10},
}


def run(tmp_path, stages):
    recipe = recipe_from_dict({**BASE, "stages": stages})
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=RunStore(tmp_path / "runs.db"))
    assert result.status == "completed", result.error
    return result


def stage(result, name):
    return next(s for s in result.run["stages"] if s["name"] == name and not s.get("auto"))


def test_lowrank_then_static_int8_run_saves_a_model_that_reloads(tmp_path):
    result = run(
        tmp_path,
        [
            "train",
            {"lowrank": {"param_ratio": 0.5, "max_steps": 3, "decay": "frobenius"}},
            {"quantize": {"mode": "static", "calibration_batches": 2}},
        ],
    )
    lr = stage(result, "lowrank")["summary"]
    assert lr["target_params_after"] <= 0.5 * lr["target_params_before"]
    assert lr["recover_steps"] == 3 and lr["decay"] == "frobenius"
    q = stage(result, "quantize")["summary"]
    assert q["mode"] == "static" and q["linear_size_ratio"] > 3.0
    # every model of the run was evaluated (the runner adds an evaluation after each stage)
    evaluated = [s["label"] for s in result.run["stages"] if s.get("metrics")]
    assert evaluated == ["train:evaluate", "lowrank:evaluate", "quantize:evaluate"]
    assert result.run["model"]["reloads"] is True, result.run["model"]
    reloaded = load_compressed(result.artifacts_dir / "model")
    with torch.inference_mode():
        out = reloaded.model(pixel_values=torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 10)


def test_dynamic_and_weight_only_stages(tmp_path):
    result = run(
        tmp_path,
        ["train", {"quantize": {"mode": "weight_only", "exclude": ["classifier.4"]}}],
    )
    q = stage(result, "quantize")["summary"]
    assert q["modules_changed"] == ["classifier.1"] and q["mode"] == "weight_only"
    assert result.run["model"]["reloads"] is True


@pytest.mark.parametrize("alpha", ["auto", 0.5])
def test_dynamic_stage_with_smoothing_reloads(tmp_path, alpha):
    result = run(
        tmp_path,
        ["train", {"quantize": {"mode": "dynamic", "smooth_alpha": alpha, "calibration_batches": 2}}],
    )
    q = stage(result, "quantize")["summary"]
    if alpha == "auto":
        chosen = q["smooth_alpha"]["chosen"]
        assert set(q["smooth_alpha"]["logit_mse"]) == {"None", "0.3", "0.5", "0.7", "0.85"}
        assert q["config"]["smooth_alpha"] == chosen
    else:
        assert q["smooth_alpha"] == 0.5 and q["config"]["smooth_alpha"] == 0.5
        assert q["modules_changed"] == ["classifier.1.linear", "classifier.4.linear"]
    assert result.run["model"]["reloads"] is True, result.run["model"]


def test_smoothing_is_refused_outside_dynamic_mode():
    with pytest.raises(ValueError, match="dynamic"):
        recipe_from_dict({**BASE, "stages": [{"quantize": {"mode": "static", "smooth_alpha": 0.5}}]})


def test_lowrank_stage_with_weight_decay_and_no_recovery(tmp_path):
    result = run(tmp_path, ["train", {"lowrank": {"rank": 2, "recover": False}}])
    summary = stage(result, "lowrank")["summary"]
    assert "recover_steps" not in summary and summary["decay"] is None
    assert set(summary["ranks"].values()) == {2}


def test_bad_stage_settings_fail_at_validation():
    with pytest.raises(ValueError, match="param_ratio"):
        recipe_from_dict({**BASE, "stages": [{"lowrank": {"param_ratio": 1.5}}]})
    with pytest.raises(ValueError, match="mode"):
        recipe_from_dict({**BASE, "stages": [{"quantize": {"mode": "int4"}}]})


def test_lowrank_pattern_matching_nothing_fails_the_run_with_a_listing(tmp_path):
    recipe = recipe_from_dict({**BASE, "stages": [{"lowrank": {"targets": ["*encoder*"]}}]})
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=RunStore(tmp_path / "r.db"))
    assert result.status == "failed"
    assert "matches no Linear/Conv2d module" in result.error and "features.0" in result.error


def test_compress_minilm_recipe_validates():
    recipe = load_recipe(REPO / "recipes" / "compress-minilm.yaml", ["data.train=t.tsv"])
    assert [s.name for s in recipe.stages] == ["evaluate", "lowrank", "quantize", "evaluate"]
    lowrank_cfg = recipe.stages[1].config
    assert lowrank_cfg.param_ratio == 0.5 and lowrank_cfg.decay == "frobenius"


@pytest.mark.parametrize("loss", ["kd", "ce"])
def test_lowrank_recovery_learns_from_the_dense_model_or_the_labels(tmp_path, loss):
    result = run(tmp_path, ["train", {"lowrank": {"param_ratio": 0.5, "max_steps": 2, "recover_loss": loss}}])
    summary = stage(result, "lowrank")["summary"]
    assert summary["recover_loss"] == loss and summary["recover_steps"] == 2
    # KD ran the dense teacher on the training batches; cross-entropy needs no teacher.
    if loss == "kd":
        assert summary["recover_teacher_forward_examples"] > 0
    else:
        assert "recover_teacher_forward_examples" not in summary
    with pytest.raises(ValueError, match="recover_loss"):
        recipe_from_dict({**BASE, "stages": [{"lowrank": {"recover_loss": "mse"}}]})
