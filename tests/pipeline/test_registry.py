"""The stage registry: registration, lookup errors, and automatic import of every stage module."""

import pkgutil

import pytest
from pydantic import BaseModel

import lowcarb.pipeline.stages as stages_pkg
from lowcarb.pipeline.registry import (
    StageConfig,
    get_stage,
    register_stage,
    registered_stages,
)


def test_builtin_stages_registered():
    known = registered_stages()
    assert {"train", "evaluate"} <= set(known)
    assert known["train"].changes_model is True
    assert known["evaluate"].changes_model is False
    assert issubclass(known["train"].config_model, StageConfig)


def test_every_stage_module_imports_and_is_imported():
    # A technique's stage module that fails to import would silently vanish from recipes.
    assert stages_pkg.import_errors() == {}
    import sys

    for info in pkgutil.iter_modules(stages_pkg.__path__):
        if not info.name.startswith("_"):
            assert f"lowcarb.pipeline.stages.{info.name}" in sys.modules


def test_register_and_get_a_stage():
    class Cfg(StageConfig):
        factor: float = 2.0

    @register_stage("test-registry-double", Cfg, changes_model=False)
    def double(ctx, cfg):
        """Doubles something."""
        return ctx

    spec = get_stage("test-registry-double")
    assert spec.fn is double and spec.config_model is Cfg and not spec.changes_model
    assert spec.description == "Doubles something."
    assert spec.config_model.model_validate({"factor": 3}).factor == 3.0


def test_duplicate_name_from_another_function_is_an_error():
    @register_stage("test-registry-dup")
    def first(ctx, cfg):
        return ctx

    with pytest.raises(ValueError, match="already registered"):

        @register_stage("test-registry-dup")
        def second(ctx, cfg):
            return ctx


def test_bad_registration_arguments():
    with pytest.raises(ValueError, match="pydantic BaseModel subclass"):
        register_stage("test-registry-bad", dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="letters, digits"):
        register_stage("bad name!", BaseModel)


def test_unknown_stage_suggests_close_name():
    with pytest.raises(ValueError, match=r"unknown stage 'evalute' \(did you mean 'evaluate'\?\)"):
        get_stage("evalute")


def test_technique_fields_take_the_configs_fields_and_validate_with_them():
    from pydantic import ValidationError

    from lowcarb.compress.lowrank import LowRankConfig
    from lowcarb.pipeline.registry import TrainOverrides, technique_fields

    class Stage(technique_fields(LowRankConfig, defaults={"rank": 4, "param_ratio": None}), TrainOverrides):
        recover: bool = True

    # the dataclass's own fields, types and defaults (one changed for the recipe), no copies
    assert {"param_ratio", "energy", "rank", "targets", "exclude", "include_conv"} <= set(Stage.model_fields)
    cfg = Stage.model_validate({"targets": ["*enc*"], "lr": 1e-3})
    assert cfg.technique() == LowRankConfig(param_ratio=None, rank=4, targets=("*enc*",))
    assert cfg.train_overrides() == {"epochs": None, "max_steps": None, "lr": 1e-3, "batch_size": None}
    # the config's own check runs when the stage settings are read
    with pytest.raises(ValidationError, match="exactly one of param_ratio, energy or rank"):
        Stage.model_validate({"param_ratio": 0.5})
    with pytest.raises(ValidationError, match="extra"):
        Stage.model_validate({"ranks": 3})


def test_quantize_stage_settings_belong_to_the_chosen_workflow():
    from pydantic import ValidationError

    from lowcarb.compress.quantize import WeightOnlyInt4
    from lowcarb.pipeline.stages.quantize import QuantizeStageConfig

    cfg = QuantizeStageConfig.model_validate({"mode": "weight_only_int4", "group_size": 64})
    assert cfg.technique() == WeightOnlyInt4(group_size=64)
    with pytest.raises(ValidationError, match="group_size not a setting of mode 'dynamic'.*weight_only_int4"):
        QuantizeStageConfig.model_validate({"group_size": 64})
    with pytest.raises(ValidationError, match="group_size must be one of"):
        QuantizeStageConfig.model_validate({"mode": "weight_only_int4", "group_size": 48})
