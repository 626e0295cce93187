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
