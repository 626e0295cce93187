"""Which library runs each quantization workflow, the torchao fallback when torch.ao is missing,
and int4 weights."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from lowcarb.compress import quantize
from lowcarb.compress.quantize import (
    DynamicInt8,
    StaticInt8,
    WeightOnlyInt4,
    WeightOnlyInt8,
    quantize_,
    sqnr_db,
)
from lowcarb.compress.quantize.backends import choose
from lowcarb.errors import ConfigError, DeviceError

REPO = Path(__file__).resolve().parents[2]


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32)).eval()


def test_auto_keeps_torch_ao_where_it_measured_faster_and_torchao_elsewhere():
    cpu = torch.device("cpu")
    assert choose(DynamicInt8(), cpu).library == "torch.ao"
    assert choose(StaticInt8(), cpu).library == "torch.ao"
    assert choose(WeightOnlyInt8(), cpu).library == "torchao"
    assert choose(WeightOnlyInt4(), cpu).library == "torchao"
    assert choose(DynamicInt8(library="torchao"), cpu).library == "torchao"
    # torch.ao's int8 kernels are CPU-only: another device gets torchao, and the summary says why.
    gpu = choose(DynamicInt8(), torch.device("cuda"))
    assert gpu.library == "torchao" and "CPU-only" in gpu.reason
    assert "CPU-only" in choose(DynamicInt8(), cpu).kernels
    with pytest.raises(DeviceError, match="CPU-only"):
        choose(DynamicInt8(library="torch.ao"), torch.device("cuda"))


def test_the_summary_says_which_library_ran_and_where_it_has_kernels():
    summary = quantize_(_mlp(), DynamicInt8(library="torchao"))
    assert summary["library"] == "torchao" and summary["library_reason"].startswith("asked for")
    assert summary["kernels"] == "cpu, cuda" and summary["backend"] == "torchao"
    summary = quantize_(_mlp(), DynamicInt8())
    assert summary["library"] == "torch.ao" and "measured faster" in summary["library_reason"]


def test_torchao_dynamic_int8_is_close_and_reloads(tmp_path):
    model = _mlp()
    x = torch.randn(8, 64)
    ref = model(x).detach()
    summary = quantize_(model, DynamicInt8(library="torchao"))
    with torch.inference_mode():
        assert sqnr_db(ref, model(x)) > 20.0
    quantize.save(model, tmp_path / "q")
    fresh = quantize.load(_mlp(seed=3), tmp_path / "q")
    with torch.inference_mode():
        assert torch.equal(fresh(x), model(x))
    assert summary["linear_size_ratio"] > 3.0


def test_int4_weights_are_close_smaller_and_skip_what_the_kernel_cannot_take(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.SiLU(), nn.Linear(128, 10)).eval()
    x = torch.randn(4, 64)
    ref = model(x).detach()
    summary = quantize_(model, WeightOnlyInt4(group_size=32))
    # the 10-row head is not a multiple of the 16-row int4 tile: left as it is, and said so
    assert summary.modules_changed == ["0"] and "multiple of 16" in summary["skipped"]["2"]
    assert type(model[2].weight) is nn.Parameter
    # 4 bits a weight plus a scale and a zero point per 32 inputs and row
    assert summary["linear_bytes_before"] / (64 * 128 * 4 + 128 * 10 * 4) == 1.0
    assert summary["linear_size_ratio"] > 2.0
    with torch.inference_mode():
        assert sqnr_db(ref, model(x)) > 15.0
    quantize.save(model, tmp_path / "q4")
    fresh = nn.Sequential(nn.Linear(64, 128), nn.SiLU(), nn.Linear(128, 10))
    fresh = quantize.load(fresh, tmp_path / "q4")
    with torch.inference_mode():
        assert torch.equal(fresh(x), model(x))


def test_int4_config_errors():
    with pytest.raises(ConfigError, match="group_size must be one of"):
        WeightOnlyInt4(group_size=48)
    no_fit = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32)).eval()
    with pytest.raises(ConfigError, match="multiple of group_size 128"):
        quantize_(no_fit, WeightOnlyInt4(group_size=128))


def test_int4_group_size_256_is_refused_on_the_cpu_before_the_model_changes():
    model = nn.Sequential(nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 16)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="group_size 256 runs on CUDA only.*32, 64, 128"):
        quantize_(model, WeightOnlyInt4(group_size=256))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model[0], nn.Linear) and type(model[0].weight) is nn.Parameter


def test_explicit_torch_ao_is_refused_when_it_is_missing(monkeypatch):
    from lowcarb.compress.quantize import backends

    monkeypatch.setattr(backends, "torch_ao_available", lambda: False)
    with pytest.raises(ConfigError, match="torch.ao.quantization cannot be imported"):
        choose(DynamicInt8(library="torch.ao"), torch.device("cpu"))
    auto = choose(StaticInt8(), torch.device("cpu"))
    assert auto.library == "torchao" and "unavailable" in auto.reason


# torch's own inductor imports its internal copy of torch.ao.quantization while torchao loads, so
# torchao is imported first; from then on every torch.ao.quantization import fails, as it will
# once torch drops the deprecated package.
HIDDEN = textwrap.dedent(
    """
    import importlib.abc, json, sys, tempfile
    import torch, torchao  # noqa: F401
    for name in list(sys.modules):
        if name == "torch.ao.quantization" or name.startswith("torch.ao.quantization."):
            sys.modules[name] = None

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "torch.ao.quantization" or name.startswith("torch.ao.quantization."):
                raise ImportError(f"{name} is hidden by the test")

    sys.meta_path.insert(0, Hide())
    from torch import nn
    from lowcarb.compress import quantize
    from lowcarb.models import DigitsCNN

    out = {"available": quantize.torch_ao_available()}
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32)).eval()
    x = torch.randn(8, 64)
    cnn = DigitsCNN((1, 8, 8), num_labels=10).eval()
    images = [{"pixel_values": torch.rand(8, 1, 8, 8) * 16} for _ in range(2)]
    cases = {
        "dynamic": (mlp, quantize.DynamicInt8(), None, x),
        "dynamic_smooth": (mlp, quantize.DynamicInt8(smooth_alpha=0.5), [x], x),
        "weight_only": (mlp, quantize.WeightOnlyInt8(), None, x),
        "weight_only_int4": (mlp, quantize.WeightOnlyInt4(), None, x),
        "static": (cnn, quantize.StaticInt8(), images, images[0]),
    }
    for name, (model, config, calibration, batch) in cases.items():
        import copy
        model = copy.deepcopy(model)
        call = (lambda m, b: m(**b)) if isinstance(batch, dict) else (lambda m, b: m(b))
        ref = call(model, batch).detach()
        summary = quantize.quantize_(model, config, calibration=calibration)
        with tempfile.TemporaryDirectory() as folder:
            quantize.save(summary.model, folder)
            fresh = copy.deepcopy(cases[name][0])
            reloaded = quantize.load(fresh, folder)
        with torch.inference_mode():
            got = call(summary.model, batch)
            out[name] = {
                "library": summary["library"], "reason": summary["library_reason"],
                "sqnr": quantize.sqnr_db(ref, got),
                "reloads": bool(torch.equal(got, call(reloaded, batch))),
                "fp32_conv_layers": summary.details.get("fp32_conv_layers"),
            }
    print(json.dumps(out))
    """
)


def test_every_workflow_runs_with_torch_ao_hidden():
    done = subprocess.run(
        [sys.executable, "-c", HIDDEN], capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.pop("available") is False
    assert set(out) == {"dynamic", "dynamic_smooth", "weight_only", "weight_only_int4", "static"}
    for name, result in out.items():
        assert result["library"] == "torchao", name
        assert result["reloads"], name
        assert result["sqnr"] > 15.0, (name, result["sqnr"])
    for name in ("dynamic", "dynamic_smooth", "static"):
        assert "unavailable: torchao chosen automatically" in out[name]["reason"]
    # torchao has no eager int8 convolution: the CNN's convolutions stay fp32, and it says so
    assert out["static"]["fp32_conv_layers"] == ["features.0", "features.3"]


def test_weight_only_workflows_change_the_model_in_place():
    model = _mlp()
    before = copy.deepcopy(model)
    summary = quantize_(model, WeightOnlyInt8())
    assert summary.model is model
    assert not torch.equal(before[0].weight, model[0].weight.dequantize())
