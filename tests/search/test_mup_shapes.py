"""Base shapes: found by comparing two widths, checked against the model, kept through save/load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowcarb.search import mup
from lowcarb.search.mup import MupModelConfig, build_model
from lowcarb.search.mup.shapes import BaseShape, Dim


def _lm(width: int = 64, **kw) -> nn.Module:
    return build_model(
        MupModelConfig(kind="lm", width=width, base_width=16, vocab_size=11, max_len=8, **kw)
    )


def test_kinds_of_every_lm_parameter():
    shapes = mup.get_base_shapes(_lm())
    kinds = {name: s.kind for name, s in shapes.items()}
    for name in (
        "attn.q.weight",
        "attn.k.weight",
        "attn.v.weight",
        "attn.o.weight",
        "mlp.fc.weight",
        "mlp.proj.weight",
    ):
        assert kinds[f"blocks.0.{name}"] == "matrix", name
    for name in (
        "tok.weight",
        "pos.weight",
        "readout.weight",
        "ln_f.weight",
        "ln_f.bias",
        "blocks.1.attn.q.bias",
        "blocks.1.mlp.fc.bias",
    ):
        assert kinds[name] == "vector", name
    assert kinds["readout.bias"] == "scalar"
    # The base sizes are the sizes at the base width, the finite ones are untouched.
    assert shapes["blocks.0.mlp.fc.weight"].dims == (Dim(64, True), Dim(16, True))
    assert shapes["tok.weight"].dims == (Dim(11, False), Dim(16, True))


def test_infer_from_two_plain_models():
    shapes = mup.infer_base_shapes(nn.Linear(8, 4), nn.Linear(16, 4))
    assert shapes["weight"].dims == (Dim(4, False), Dim(8, True))
    assert shapes["weight"].kind == "vector"
    assert shapes["bias"].kind == "scalar"


def test_no_width_dependent_dimension_is_an_error():
    with pytest.raises(ValueError, match="no width-dependent dimension"):
        mup.infer_base_shapes(nn.Linear(8, 4), nn.Linear(8, 4))


def test_different_models_are_an_error():
    with pytest.raises(ValueError, match="different parameters"):
        mup.infer_base_shapes(nn.Linear(8, 4), nn.Sequential(nn.Linear(16, 4)))


def test_width_smaller_than_base_is_an_error():
    with pytest.raises(ValueError, match="smaller than the base width"):
        MupModelConfig(kind="mlp", width=16, base_width=32)
    shapes = mup.infer_base_shapes(nn.Linear(8, 4), nn.Linear(16, 4))
    with pytest.raises(ValueError, match="smaller than the base width"):
        mup.set_base_shapes(nn.Linear(4, 4), shapes)


def test_shapes_that_do_not_fit_the_model_are_an_error():
    shapes = mup.infer_base_shapes(nn.Linear(8, 4), nn.Linear(16, 4))
    with pytest.raises(ValueError, match="fixed at 4"):
        mup.set_base_shapes(nn.Linear(8, 5), shapes)
    with pytest.raises(ValueError, match="do not match"):
        mup.set_base_shapes(nn.Sequential(nn.Linear(8, 4)), shapes)


def test_model_without_shapes_says_what_to_call():
    with pytest.raises(ValueError, match="set_base_shapes"):
        mup.optimizer(nn.Linear(4, 4), "adamw", lr=1e-3)


def test_save_and_load_keep_weights_shapes_and_config(tmp_path):
    torch.manual_seed(0)
    model = _lm(width=32, depth=3, base_depth=2, depth_scaling="completep")
    folder = mup.save(model, tmp_path / "m")
    assert (folder / "model.safetensors").exists() and (folder / "mup.json").exists()
    again = mup.load(folder)
    assert again.config == model.config
    assert mup.get_base_shapes(again) == mup.get_base_shapes(model)
    x = torch.randint(0, 11, (2, 8))
    # The readout is zero-initialised under muP: perturb it so the comparison means something.
    with torch.no_grad():
        model.readout.weight.normal_()
        again.readout.weight.copy_(model.readout.weight)
    torch.testing.assert_close(again(x), model(x))
    lrs = [(g["names"], g["lr"]) for g in mup.param_groups(model, "adamw", 1e-2)]
    assert [(g["names"], g["lr"]) for g in mup.param_groups(again, "adamw", 1e-2)] == lrs
    assert again.blocks[0].branch_mult == pytest.approx(2 / 3)


def test_load_uses_the_saved_shapes_not_a_rebuild(tmp_path):
    model = _lm(width=32)
    folder = mup.save(model, tmp_path / "m")
    # Declare a different base in the file: a reload must honour it, proving it is read back.
    shapes = mup.get_base_shapes(model)
    shapes["blocks.0.attn.q.weight"] = BaseShape((Dim(8, True), Dim(8, True)))
    mup.set_base_shapes(model, shapes)
    mup.save(model, folder)
    again = mup.load(folder)
    assert mup.get_base_shapes(again)["blocks.0.attn.q.weight"].dims[0].base == 8


def test_base_shapes_file_round_trip(tmp_path):
    shapes = mup.get_base_shapes(_lm())
    path = mup.save_base_shapes(shapes, tmp_path / "shapes.json")
    assert mup.load_base_shapes(path) == shapes
    with pytest.raises(FileNotFoundError):
        mup.load_base_shapes(tmp_path / "missing.json")


def test_load_of_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved muP model"):
        mup.load(tmp_path)
