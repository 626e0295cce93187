"""``quantize_(model, config, calibration=None)``: one verb, the workflow chosen by the config's type.

Each workflow is one function ``(model, config, choice, calibration) -> Applied`` in ``WORKFLOWS``
and one replay in the transform table (lowcarb.models.transforms), which rebuilds the quantized
structure on a fresh model from the record the workflow left in the model's log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lowcarb.compress.quantize import compute_dtype, torch_ao, torchao_kernels
from lowcarb.compress.quantize.accounting import linear_weight_bytes
from lowcarb.compress.quantize.backends import Choice, choose, resolve_backend
from lowcarb.compress.quantize.configs import (
    CPU_INT4_GROUP_SIZES,
    DynamicInt8,
    StaticInt8,
    WeightOnlyInt4,
    WeightOnlyInt8,
    Workflow,
)
from lowcarb.compress.quantize.smooth import smooth, smoothed_structure
from lowcarb.errors import ConfigError, DataError
from lowcarb.models.surgery import (
    batch_from_spec,
    batch_spec,
    count_parameters,
    keep_ordinary_path,
    select_modules,
)
from lowcarb.models.transforms import (
    TransformSummary,
    carry_log,
    record,
    register_transform,
)

__all__ = ["MODES", "quantize_"]

# The recipe's `mode` for each workflow (the quantize stage parses it; the report shows it).
MODES: dict[type, str] = {
    DynamicInt8: "dynamic",
    WeightOnlyInt8: "weight_only",
    WeightOnlyInt4: "weight_only_int4",
    StaticInt8: "static",
}


@dataclass
class Applied:
    model: nn.Module
    changed: list[str]
    structure: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _linears(model: nn.Module, config: Workflow) -> list[str]:
    candidates = {n: m for n, m in model.named_modules() if n and type(m) is nn.Linear}
    return select_modules(candidates, config.targets, config.exclude, "Linear")


def _refuse_calibration(config: Workflow, calibration: Any) -> None:
    if calibration is not None:
        raise ConfigError(
            "calibration data is only used by mode='static' and by smoothing (StaticInt8, "
            f"DynamicInt8(smooth_alpha=...)), not by {type(config).__name__} without smoothing"
        )


def _take(calibration: Iterable[Any], n: int) -> list[Any]:
    batches = [b for _, b in zip(range(n), calibration, strict=False)]
    if not batches:
        raise DataError("the calibration data is empty; pass a loader with at least one batch")
    return batches


def _dynamic(model: nn.Module, cfg: DynamicInt8, choice: Choice, calibration: Any) -> Applied:
    if cfg.smooth_alpha is None:
        _refuse_calibration(cfg, calibration)
    elif calibration is None:
        raise ConfigError(
            "smooth_alpha needs calibration batches: quantize_(model, config, calibration=...)"
        )
    names = wrapped = _linears(model, cfg)
    if cfg.smooth_alpha is not None:
        names = smooth(model, wrapped, cfg.smooth_alpha, calibration, cfg.calibration_batches)
    structure: dict[str, Any] = {
        "modules": names, "smoothed": wrapped if cfg.smooth_alpha is not None else []}
    if choice.library == "torch.ao":
        structure["backend"] = _set_engine(cfg.backend)
        torch_ao.dynamic(model, names, cfg.per_channel)
    else:
        torchao_kernels.dynamic(model, names, cfg.per_channel)
    return Applied(model, names, structure)


def _set_engine(backend: str) -> str:
    engine = resolve_backend(backend)
    torch.backends.quantized.engine = engine
    return engine


def _int8_weights(model: nn.Module, names: list[str], cfg: WeightOnlyInt8) -> str:
    """Quantize the named Linears to int8 weights; returns the kernel used (the structure's
    ``kernel``): PyTorch's packed int8 kernel for bf16 compute on CPU, else torchao."""
    if cfg.compute_dtype is None:
        torchao_kernels.weight_only_int8(model, names, cfg.per_channel)
        return "torchao"
    dtype = compute_dtype.torch_dtype(cfg.compute_dtype)
    if _device(model).type == "cpu":
        compute_dtype.packed_int8(model, names, cfg.per_channel, dtype)
        return "int8pack_mm"
    compute_dtype.cast_around(model, names, dtype)
    torchao_kernels.weight_only_int8(model, names, cfg.per_channel)
    return "torchao"


def _weight_only_int8(model: nn.Module, cfg: WeightOnlyInt8, choice: Choice, calibration: Any) -> Applied:
    _refuse_calibration(cfg, calibration)
    names = _linears(model, cfg)
    kernel = _int8_weights(model, names, cfg)
    return Applied(model, names, {"modules": names, "kernel": kernel}, {"kernel": kernel})


def _weight_only_int4(model: nn.Module, cfg: WeightOnlyInt4, choice: Choice, calibration: Any) -> Applied:
    _refuse_calibration(cfg, calibration)
    if _device(model).type != "cuda" and cfg.group_size not in CPU_INT4_GROUP_SIZES:
        raise ConfigError(
            f"int4 group_size {cfg.group_size} runs on CUDA only: the CPU int4 kernel takes "
            f"group_size {', '.join(map(str, CPU_INT4_GROUP_SIZES))}; choose one of those"
        )
    names, skipped = torchao_kernels.int4_groups_fit(model, _linears(model, cfg), cfg.group_size)
    if not names:
        raise ConfigError(
            f"no targeted Linear has an input size that is a multiple of group_size "
            f"{cfg.group_size}: {skipped}; use a smaller group_size"
        )
    if cfg.compute_dtype is not None:
        compute_dtype.cast_around(model, names, compute_dtype.torch_dtype(cfg.compute_dtype))
    layout = torchao_kernels.weight_only_int4(model, names, cfg.group_size, _device(model))
    return Applied(model, names, {"modules": names, "layout": layout}, {"skipped": skipped})


def _static(model: nn.Module, cfg: StaticInt8, choice: Choice, calibration: Any) -> Applied:
    if calibration is None:
        raise ConfigError(
            "static quantization needs calibration data: quantize_(model, StaticInt8(), "
            "calibration=<a loader of training batches>)"
        )
    batches = _take(calibration, cfg.calibration_batches)
    if choice.library == "torch.ao":
        engine = _set_engine(cfg.backend)
        out = torch_ao.static(model, cfg, engine, batches)
        structure = {"backend": engine, "example": batch_spec(batches[0])}
        return Applied(out, torch_ao.quantized_modules(out), structure)
    names = _linears(model, cfg)
    stats = torchao_kernels.static_calibrate(model, names, batches)
    torchao_kernels.static_linear(model, stats, cfg.per_channel)
    structure = {"modules": names, "ndims": {n: nd for n, (_, nd) in stats.items()}}
    left = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return Applied(model, names, structure, {"fp32_conv_layers": left})


WORKFLOWS: dict[type, Callable[[nn.Module, Any, Choice, Any], Applied]] = {
    DynamicInt8: _dynamic,
    WeightOnlyInt8: _weight_only_int8,
    WeightOnlyInt4: _weight_only_int4,
    StaticInt8: _static,
}


def quantize_(
    model: nn.Module, config: Workflow, calibration: Iterable[Any] | None = None
) -> TransformSummary:
    """Quantize ``model`` for inference with the workflow ``config`` names (by its type).

    Every workflow but static int8 on torch.ao changes ``model`` in place; that one builds a new
    traced module. The result is ``summary.model`` either way. The model is put in eval mode
    (quantized modules are inference-only) and its transform log gains the config.
    """
    workflow = WORKFLOWS.get(type(config))
    if workflow is None:
        raise ConfigError(
            f"{type(config).__name__} is not a quantization workflow; use one of "
            f"{[t.__name__ for t in WORKFLOWS]}"
        )
    model.eval()
    params_before, bytes_before = count_parameters(model), linear_weight_bytes(model)
    choice = choose(config, _device(model))
    applied = workflow(model, config, choice, calibration)
    keep_ordinary_path(applied.model)  # torch.ao swapped Linears without set_module
    out = carry_log(model, applied.model)
    structure = {"library": choice.library, **applied.structure}
    record(out, config, structure)
    bytes_after = linear_weight_bytes(out)
    details = {
        "mode": MODES[type(config)],
        "library": choice.library,
        "library_reason": choice.reason,
        "kernels": choice.kernels,
        "backend": structure.get("backend", choice.library),
        "linear_bytes_before": bytes_before,
        "linear_bytes_after": bytes_after,
        # fp32 / quantized bytes of the Linear weights (scales and zero points included)
        "linear_size_ratio": bytes_before / max(bytes_after, 1),
        **applied.details,
    }
    return TransformSummary(
        MODES[type(config)], config, params_before, count_parameters(out), applied.changed,
        details, model=out,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# replay: the quantized structure on a fresh model, weights loaded after
# ---------------------------------------------------------------------------------------------


def _replay_dynamic(model: nn.Module, cfg: DynamicInt8, structure: dict[str, Any]) -> nn.Module:
    model.eval()
    smoothed_structure(model, list(structure.get("smoothed", [])))
    names = list(structure["modules"])
    if structure["library"] == "torch.ao":
        torch.backends.quantized.engine = structure["backend"]
        torch_ao.dynamic(model, names, cfg.per_channel)
        keep_ordinary_path(model)
    else:
        torchao_kernels.dynamic(model, names, cfg.per_channel)
    return model


def _replay_weight_only_int8(model: nn.Module, cfg: WeightOnlyInt8, structure: dict[str, Any]) -> nn.Module:
    kernel = _int8_weights(model.eval(), list(structure["modules"]), cfg)
    if kernel != structure.get("kernel", "torchao"):
        raise ConfigError(
            f"this int8 model was quantized for the {structure.get('kernel')} kernel and is being "
            f"loaded as {kernel}: load it on the device kind it was quantized on"
        )
    return model


def _replay_weight_only_int4(model: nn.Module, cfg: WeightOnlyInt4, structure: dict[str, Any]) -> nn.Module:
    if cfg.compute_dtype is not None:
        compute_dtype.cast_around(model.eval(), list(structure["modules"]), compute_dtype.torch_dtype(cfg.compute_dtype))
    layout = torchao_kernels.weight_only_int4(
        model.eval(), list(structure["modules"]), cfg.group_size, _device(model)
    )
    if layout != structure["layout"]:
        raise ConfigError(
            f"this int4 model was packed for {structure['layout']} and is being loaded as "
            f"{layout}: load it on the device kind it was quantized on"
        )
    return model


def _replay_static(model: nn.Module, cfg: StaticInt8, structure: dict[str, Any]) -> nn.Module:
    model.eval()
    if structure["library"] == "torch.ao":
        example = structure.get("example")
        if not example:
            raise ConfigError(
                "this static-int8 record has no example batch shapes to trace the model with; "
                "quantize it again with quantize_(model, StaticInt8(), calibration=...)"
            )
        torch.backends.quantized.engine = structure["backend"]
        return torch_ao.static_structure(model, cfg, structure["backend"], batch_from_spec(example))
    stats = {n: (1.0, int(nd)) for n, nd in structure["ndims"].items()}  # scales loaded after
    torchao_kernels.static_linear(model, stats, cfg.per_channel)
    return model


for _type, _replay in (
    (DynamicInt8, _replay_dynamic),
    (WeightOnlyInt8, _replay_weight_only_int8),
    (WeightOnlyInt4, _replay_weight_only_int4),
    (StaticInt8, _replay_static),
):
    register_transform(_type, f"quantize.{MODES[_type]}", _replay)
