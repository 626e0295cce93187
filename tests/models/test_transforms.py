"""The transform log: records, replay order, JSON round trips, and errors for foreign records."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from lowcarb.errors import ModelError
from lowcarb.models.transforms import (
    TransformRecord,
    TransformSummary,
    carry_log,
    forget,
    record,
    record_from_json,
    record_to_json,
    register_transform,
    replace_structure,
    replay,
    transform_log,
)


@dataclass(frozen=True)
class Scale:
    """A test transform: multiply the output of module `name` by `factor` (a wrapper)."""

    name: str
    factor: float = 2.0


class Scaled(nn.Module):
    def __init__(self, inner: nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.factor


def _wrap(model: nn.Module, cfg: Scale, structure: dict) -> nn.Module:
    setattr(model, cfg.name, Scaled(getattr(model, cfg.name), cfg.factor))
    return model


register_transform(Scale, "test.scale", _wrap)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))


def test_records_accumulate_in_order_and_copy_with_the_model():
    model = _model()
    record(model, Scale("0"), {"why": 1})
    record(model, Scale("1", 3.0))
    log = transform_log(model)
    assert [r.config for r in log] == [Scale("0"), Scale("1", 3.0)]
    assert log[0].structure == {"why": 1} and log[1].structure == {}
    assert transform_log(copy.deepcopy(model)) == log
    # a plain nn.Module stays a plain module: the log is an attribute, not a parameter or buffer
    assert type(model) is nn.Sequential and not any("transform" in k for k in model.state_dict())


def test_forget_replace_structure_and_carry():
    model = _model()
    record(model, Scale("0"), {"merged": False})
    replace_structure(model, Scale, merged=True)
    assert transform_log(model)[0].structure == {"merged": True}
    other = carry_log(model, _model())
    assert transform_log(other) == transform_log(model)
    forget(model, Scale)
    assert transform_log(model) == ()
    with pytest.raises(ValueError, match="has no Scale"):
        replace_structure(model, Scale, merged=False)


def test_an_unregistered_config_cannot_be_recorded():
    @dataclass(frozen=True)
    class Unknown:
        x: int = 1

    with pytest.raises(TypeError, match="not a registered transform config"):
        record(_model(), Unknown())


def test_replay_follows_the_log_order_and_sets_the_log():
    log = (TransformRecord(Scale("0", 2.0)), TransformRecord(Scale("0", 5.0)))
    model = replay(_model(), log)
    assert isinstance(model[0], Scaled) and isinstance(model[0].inner, Scaled)
    assert model[0].factor == 5.0 and model[0].inner.factor == 2.0  # applied second: outermost
    assert transform_log(model) == log


def test_json_round_trip_and_errors_for_foreign_records():
    entry = TransformRecord(Scale("1", 1.5), {"n": [1, 2]})
    data = record_to_json(entry)
    assert data["transform"] == "test.scale" and data["config"] == {"name": "1", "factor": 1.5}
    assert record_from_json(data) == entry
    with pytest.raises(ModelError, match="unknown transform 'nope'"):
        record_from_json({**data, "transform": "nope", "module": None})
    with pytest.raises(ModelError, match="outside lowcarb"):
        record_from_json({**data, "transform": "nope", "module": "os"})
    with pytest.raises(ModelError, match="does not validate"):
        record_from_json({**data, "config": {"name": "1", "factor": "lots"}})
    with pytest.raises(ModelError, match="not a transform record"):
        record_from_json({"config": {}})


def test_a_name_belongs_to_one_config_type():
    @dataclass(frozen=True)
    class Other:
        pass

    with pytest.raises(ValueError, match="taken by Scale"):
        register_transform(Other, "test.scale", _wrap)


def test_summary_to_dict_flattens_details_and_indexes_them():
    summary = TransformSummary("test.scale", Scale("0"), 10, 12, ["0"], {"ratio": 1.2})
    assert summary["ratio"] == 1.2
    assert summary.to_dict() == {
        "transform": "test.scale", "params_before": 10, "params_after": 12,
        "modules_changed": ["0"], "config": {"name": "0", "factor": 2.0}, "ratio": 1.2,
    }  # fmt: skip
