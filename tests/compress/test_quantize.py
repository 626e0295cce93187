"""Quantization workflows: closeness to fp32, sizes, save/reload, errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from lowcarb.compress import lowrank, quantize
from lowcarb.compress.quantize import (
    DynamicInt8,
    StaticInt8,
    WeightOnlyInt8,
    quantize_,
    sqnr_db,
)
from lowcarb.models import DigitsCNN


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    ).eval()


def _cnn(seed: int = 0) -> DigitsCNN:
    torch.manual_seed(seed)
    net = DigitsCNN((1, 8, 8), num_labels=10).eval()
    # Non-trivial BatchNorm statistics, as after training.
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g) * 16  # digits pixels are 0..16


@pytest.mark.parametrize("config", [DynamicInt8(), WeightOnlyInt8()])
def test_linear_modes_are_close_to_fp32(config):
    model = _mlp()
    ref_model = copy.deepcopy(model)
    summary = quantize_(model, config)
    assert summary.model is model
    assert summary.modules_changed == ["0", "2", "4"]
    x = torch.randn(32, 64)
    with torch.inference_mode():
        ref, out = ref_model(x), model(x)
    assert sqnr_db(ref, out) > 20.0
    assert not torch.equal(ref, out)  # really quantized, not a copy


def test_dynamic_uses_int8_kernels_with_per_channel_scales():
    from torch.ao.nn.quantized.dynamic import Linear as DQLinear

    model = _mlp()
    summary = quantize_(model, DynamicInt8())
    assert isinstance(model[0], DQLinear)
    w = model[0].weight()
    assert w.dtype == torch.qint8 and w.qscheme() == torch.per_channel_affine
    assert summary["backend"] == torch.backends.quantized.engine
    # per-tensor when asked
    pt = _mlp()
    quantize_(pt, DynamicInt8(per_channel=False))
    assert pt[0].weight().qscheme() == torch.per_tensor_affine


def test_per_channel_is_more_accurate_than_per_tensor_with_uneven_rows():
    torch.manual_seed(1)
    layer = nn.Linear(64, 32)
    with torch.no_grad():
        layer.weight.mul_(torch.logspace(-2, 0, 32)[:, None])  # rows of very different scale
    x = torch.randn(16, 64)
    ref = layer(x).detach()
    errs = {}
    for per_channel in (True, False):
        m = nn.Sequential(copy.deepcopy(layer))
        quantize_(m, WeightOnlyInt8(per_channel=per_channel))
        errs[per_channel] = sqnr_db(ref, m(x))
    assert errs[True] > errs[False] + 3.0


def test_weight_only_storage_and_dequantization():
    torch.manual_seed(2)
    layer = nn.Linear(16, 8)
    q = copy.deepcopy(nn.Sequential(layer))
    quantize_(q, WeightOnlyInt8())
    # torchao's Int8Tensor: int8 values, one fp32 scale per row (symmetric: zero points are 0)
    w = q[0].weight
    weight_int8, weight_scale = w.qdata, w.scale.flatten()
    assert weight_int8.dtype == torch.int8 and weight_int8.abs().max() <= 127
    assert torch.equal(w.zero_point, torch.zeros_like(w.zero_point))
    # each row's largest weight maps to the edge of the int8 range (torchao's symmetric scheme
    # uses [-128, 127]: scale = row max / 127.5, so the largest magnitude lands on 127 or -128)
    assert torch.equal(weight_int8.to(torch.int16).abs().amax(dim=1).clamp(max=127),
                       torch.full((8,), 127, dtype=torch.int16))
    err = (weight_int8.float() * weight_scale[:, None] - layer.weight).abs()
    assert (err <= weight_scale[:, None] / 2 + 1e-7).all()


# per output row: torch.ao keeps a float64 scale and an int64 zero point; torchao's weight-only
# Int8Tensor a float32 scale and an int8 zero point.
@pytest.mark.parametrize(
    ("config", "per_row_bytes"), [(DynamicInt8(), 8 + 8), (WeightOnlyInt8(), 4 + 1)]
)
def test_linear_weight_bytes_count_int8_values_and_scales(config, per_row_bytes):
    model = _mlp()
    summary = quantize_(model, config)
    weights = 64 * 128 + 128 * 128 + 128 * 10
    rows = 128 + 128 + 10
    assert summary["linear_bytes_before"] == 4 * weights
    # one byte per weight plus, per output row, the scale and the zero point
    assert summary["linear_bytes_after"] == weights + rows * per_row_bytes
    assert summary["linear_size_ratio"] == pytest.approx(
        4 * weights / (weights + rows * per_row_bytes)
    )


def test_static_cnn_is_close_to_fp32():
    net = _cnn()
    ref_net = copy.deepcopy(net)
    calib = [
        {"pixel_values": _images(32, s), "labels": torch.zeros(32, dtype=torch.long)}
        for s in range(4)
    ]
    summary = quantize_(net, StaticInt8(), calibration=calib)
    qnet = summary.model
    assert qnet is not net
    assert any(
        "Conv" in type(m).__name__ and "quantized" in type(m).__module__ for m in qnet.modules()
    )
    x = _images(64, 99)
    with torch.inference_mode():
        ref, out = ref_net(x), qnet(pixel_values=x)
    assert sqnr_db(ref, out) > 20.0
    assert summary["linear_size_ratio"] > 3.0  # small Linear layers: scale overhead is visible


def test_static_without_calibration_is_refused():
    with pytest.raises(ValueError, match="calibration data"):
        quantize_(_cnn(), StaticInt8())
    with pytest.raises(ValueError, match="empty"):
        quantize_(_cnn(), StaticInt8(), calibration=[])
    with pytest.raises(ValueError, match="only used by mode='static'"):
        quantize_(_mlp(), DynamicInt8(), calibration=[torch.zeros(1, 64)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"library": "tensorrt"}, "unknown library"),
        ({"backend": "tpu"}, "unknown backend"),
        ({"calibration_batches": 0}, "calibration_batches must be at least 1"),
        ({"targets": "encoder"}, "tuples of patterns"),
    ],
)
def test_bad_configs_give_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DynamicInt8(**kwargs)


def test_a_config_that_is_not_a_workflow_is_refused():
    # The mode string is gone: the workflow is the config's type.
    with pytest.raises(ValueError, match="not a quantization workflow"):
        quantize_(_mlp(), lowrank.LowRankConfig())


def test_pattern_matching_nothing_lists_the_linears():
    with pytest.raises(ValueError, match="matches no Linear module; Linear modules are: 0, 2, 4"):
        quantize_(_mlp(), DynamicInt8(targets=("*attention*",)))
    with pytest.raises(ValueError, match="leave no Linear"):
        quantize_(_mlp(), DynamicInt8(exclude=("*",)))


def test_exclude_keeps_layers_fp32():
    model = _mlp()
    summary = quantize_(model, DynamicInt8(exclude=("4",)))
    assert summary.modules_changed == ["0", "2"]
    assert type(model[4]) is nn.Linear


@pytest.mark.parametrize(("config", "mode"), [(DynamicInt8(), "dynamic"), (WeightOnlyInt8(), "weight_only")])
def test_save_and_reload_gives_identical_outputs(tmp_path, config, mode):
    model = _mlp()
    summary = quantize_(model, config)
    quantize.save(summary.model, tmp_path / "q")
    meta = json.loads((tmp_path / "q" / "transforms.json").read_text())
    assert meta["transforms"][-1]["transform"] == f"quantize.{mode}"
    fresh = quantize.load(_mlp(seed=7), tmp_path / "q")  # different fp32 weights
    x = torch.randn(8, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), fresh(x))


def test_static_save_and_reload_gives_identical_outputs(tmp_path):
    calib = [{"pixel_values": _images(32, s)} for s in range(3)]
    summary = quantize_(_cnn(), StaticInt8(), calibration=calib)
    quantize.save(summary.model, tmp_path / "s")
    # The log keeps the example's shapes, so reloading needs no example batch any more.
    fresh = quantize.load(_cnn(seed=3), tmp_path / "s")
    x = _images(16, 5)
    with torch.inference_mode():
        assert torch.equal(summary.model(pixel_values=x), fresh(pixel_values=x))


def test_factorized_then_quantized_reloads(tmp_path):
    model = _mlp()
    lowrank.apply(model, lowrank.LowRankConfig(param_ratio=0.5))
    ranks = {n: m.rank for n, m in lowrank.factorized_modules(model).items()}
    summary = quantize_(model, DynamicInt8())
    assert any(n.endswith(".u") for n in summary.modules_changed)
    assert set(ranks) == set(lowrank.factorized_modules(model))
    quantize.save(summary.model, tmp_path / "lq")
    # The log replays the factorization, then the quantization, on a plain fresh model.
    fresh = quantize.load(_mlp(seed=5), tmp_path / "lq")
    x = torch.randn(4, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), fresh(x))


def test_no_pickle_in_saved_files(tmp_path):
    summary = quantize_(_mlp(), DynamicInt8())
    out = quantize.save(summary.model, tmp_path / "q")
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "transforms.json"]
    with pytest.raises(FileNotFoundError, match="save_transformed"):
        quantize.load(_mlp(), tmp_path)


def test_sqnr():
    x = torch.ones(10)
    assert sqnr_db(x, x) == float("inf")
    assert sqnr_db(x, x * 1.1) == pytest.approx(20.0)


# --------------------------------------------------------------------------- smoothing (SmoothQuant)


def _outlier_mlp_and_batches(seed: int = 0) -> tuple[nn.Module, list[torch.Tensor]]:
    """An MLP whose input has two channels 50x larger than the rest, as BERT's LayerNorm outputs
    have: per-tensor activation scales then leave the other channels a few int8 levels."""
    model = _mlp(seed)
    g = torch.Generator().manual_seed(seed)
    gain = torch.ones(64)
    gain[[3, 17]] = 50.0
    batches = [torch.randn(32, 64, generator=g) * gain for _ in range(6)]
    return model, batches


def test_smoothing_alone_keeps_the_function():
    model, batches = _outlier_mlp_and_batches()
    ref = copy.deepcopy(model)
    names = quantize.smooth(model, ["0", "2"], 0.5, batches, 4)
    assert names == ["0.linear", "2.linear"]
    assert isinstance(model[0], quantize.SmoothedLinear)
    assert not torch.allclose(model[0].input_scale, torch.ones(64))
    x = batches[-1]
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-4)


def test_smoothing_scales_follow_the_formula():
    amax = torch.tensor([4.0, 1.0, 0.0])
    weight = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.25, -1.0]])  # column maxima 1, 2, 3
    s = quantize.smoothing_scales(amax, weight, alpha=0.5)
    torch.testing.assert_close(s, torch.tensor([2.0, (1.0 / 2.0) ** 0.5, 1.0]))


def test_smoothing_lowers_the_int8_error_on_outlier_channels():
    model, batches = _outlier_mlp_and_batches()
    x = batches[-1]
    with torch.no_grad():
        ref = model(x)
    plain = quantize_(copy.deepcopy(model), DynamicInt8()).model
    smooth = quantize_(
        copy.deepcopy(model), DynamicInt8(smooth_alpha=0.5), calibration=batches[:4]
    ).model
    with torch.no_grad():
        plain_db, smooth_db = sqnr_db(ref, plain(x)), sqnr_db(ref, smooth(x))
    assert smooth_db > plain_db + 3.0


def test_smoothed_save_and_reload_gives_identical_outputs(tmp_path):
    model, batches = _outlier_mlp_and_batches()
    summary = quantize_(model, DynamicInt8(smooth_alpha=0.6), calibration=batches[:2])
    quantize.save(summary.model, tmp_path / "sq")
    fresh = quantize.load(_mlp(seed=9), tmp_path / "sq")
    with torch.inference_mode():
        assert torch.equal(summary.model(batches[-1]), fresh(batches[-1]))


def test_choose_smooth_alpha_picks_the_smallest_error_and_leaves_the_model():
    model, batches = _outlier_mlp_and_batches()
    before = copy.deepcopy(model.state_dict())
    alpha, errors = quantize.choose_smooth_alpha(
        model, DynamicInt8(), batches[:4], batches[4:], alphas=(None, 0.5, 0.8)
    )
    assert set(errors) == {"None", "0.5", "0.8"}
    assert errors[str(alpha)] == min(errors.values())
    assert alpha is not None  # outlier channels: some smoothing beats none
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_bad_smoothing_configs():
    # Smoothing is an option of the dynamic workflow only: the others have no such field.
    for workflow in (StaticInt8, WeightOnlyInt8):
        with pytest.raises(TypeError, match="smooth_alpha"):
            workflow(smooth_alpha=0.5)
    with pytest.raises(ValueError, match=r"smooth_alpha must be in \[0, 1\]"):
        DynamicInt8(smooth_alpha=1.5)


def test_smoothing_a_linear_that_never_runs_is_refused():
    class WithSpare(nn.Module):
        def __init__(self, body: nn.Module) -> None:
            super().__init__()
            self.body, self.unused = body, nn.Linear(64, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    body, batches = _outlier_mlp_and_batches()
    model = WithSpare(body)
    with pytest.raises(ValueError, match=r"\['unused'\] never ran"):
        quantize_(model, DynamicInt8(smooth_alpha=0.5), calibration=batches[:2])


def test_smoothing_without_calibration_is_refused():
    with pytest.raises(ValueError, match="smooth_alpha needs calibration"):
        quantize_(_mlp(), DynamicInt8(smooth_alpha=0.5))
    with pytest.raises(ValueError, match="only used by mode='static' and by smoothing"):
        quantize_(_mlp(), DynamicInt8(), calibration=[torch.randn(4, 64)])
