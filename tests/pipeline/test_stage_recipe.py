"""recipe_with_stage: the recipe a one-stage verb (lowcarb autodistil) runs."""

from __future__ import annotations

import pytest

from lowcarb.errors import ConfigError
from lowcarb.pipeline.stage_recipe import recipe_with_stage


def test_the_stage_is_appended_after_the_default_stages_with_its_settings(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\n")
    recipe = recipe_with_stage(path, "lowrank", {"param_ratio": 0.25, "missing": None})
    assert [s.name for s in recipe.stages] == ["train", "evaluate", "lowrank"]
    assert recipe.stages[-1].config.param_ratio == 0.25
    assert recipe.overrides == ("stages.lowrank.param_ratio=0.25",)


def test_a_recipe_that_has_the_stage_keeps_its_place_and_the_settings_win(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("stages:\n  - train\n  - lowrank: {param_ratio: 0.5}\n  - evaluate\n")
    recipe = recipe_with_stage(path, "lowrank", {"param_ratio": 0.3}, ["train.epochs=2"])
    assert [s.name for s in recipe.stages] == ["train", "lowrank", "evaluate"]
    assert recipe.stages[1].config.param_ratio == 0.3 and recipe.train.epochs == 2


def test_a_bad_setting_is_a_config_error_naming_the_stage(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\n")
    with pytest.raises(ConfigError, match=r"stages\[2\]\.lowrank: param_ratio must be in"):
        recipe_with_stage(path, "lowrank", {"param_ratio": 7})
    with pytest.raises(ConfigError, match="not found"):
        recipe_with_stage(tmp_path / "missing.yaml", "lowrank")
