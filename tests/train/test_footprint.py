"""inference_footprint: the window sees every inference done (the device is synchronized before
it opens and before it closes) and runs where the model is."""

import importlib

import torch

from lowcarb.train import inference_footprint

from .conftest import TinyNet

footprint_module = importlib.import_module("lowcarb.train.footprint")


def test_the_window_is_bracketed_by_synchronizations(monkeypatch):
    events = []
    monkeypatch.setattr(footprint_module, "synchronize", lambda device: events.append(("sync", str(device))))
    model = TinyNet().to("meta")
    model.register_forward_hook(lambda *a: events.append(("forward", None)))
    batch = {"x": torch.randn(8, 4), "labels": torch.zeros(8, dtype=torch.long)}
    fp = inference_footprint(model, batch, n_inferences=24, on_close=lambda fp: events.append(("close", None)))
    assert events == [("sync", "meta"), *[("forward", None)] * 3, ("sync", "meta"), ("close", None)]
    assert fp.units == 24


def test_serving_runs_under_the_precisions_autocast():
    dtypes = []
    model = TinyNet()
    model.linear.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    batch = {"x": torch.randn(4, 4)}
    inference_footprint(model, batch, n_inferences=8, precision="bf16")
    assert dtypes == [torch.bfloat16] * 2
