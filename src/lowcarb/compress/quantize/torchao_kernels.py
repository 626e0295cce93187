"""The torchao implementations: ``quantize_(model, config)`` on the chosen Linear layers.

Every torchao config is built with ``set_inductor_config=False``: torchao would otherwise change
torch.compile's process-global settings as a side effect of quantizing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lowcarb.compress.quantize.calibrate import observe_inputs
from lowcarb.errors import ConfigError

__all__ = ["dynamic", "int4_groups_fit", "static_calibrate", "static_linear", "weight_only_int4",
           "weight_only_int8"]


# The int4 packing works in tiles of this many output rows (tinygemm, CPU and CUDA).
INT4_ROW_TILE = 16


def _apply(model: nn.Module, names: Iterable[str], ao_config: Any) -> None:
    from torchao.quantization import quantize_

    chosen = set(names)
    quantize_(model, ao_config, filter_fn=lambda module, fqn: fqn in chosen)


def _granularity(per_channel: bool) -> Any:
    from torchao.quantization.granularity import PerRow, PerTensor

    return PerRow() if per_channel else PerTensor()


def dynamic(model: nn.Module, names: list[str], per_channel: bool) -> None:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    _apply(model, names, Int8DynamicActivationInt8WeightConfig(
        granularity=_granularity(per_channel), set_inductor_config=False
    ))  # fmt: skip


def weight_only_int8(model: nn.Module, names: list[str], per_channel: bool) -> None:
    from torchao.quantization import Int8WeightOnlyConfig

    _apply(model, names, Int8WeightOnlyConfig(
        granularity=_granularity(per_channel), set_inductor_config=False
    ))  # fmt: skip


def int4_groups_fit(model: nn.Module, names: list[str], group_size: int) -> tuple[list[str], dict[str, str]]:
    """(names the int4 kernels take, why each other one is skipped): the input size must be a
    multiple of ``group_size`` (torchao would skip such a layer silently) and the output size a
    multiple of 16 (the tinygemm packing works in tiles of 16 output rows)."""
    fit, skipped = [], {}
    for name in names:
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear)  # the workflows select plain Linears only
        if layer.in_features % group_size:
            skipped[name] = f"in_features {layer.in_features} is not a multiple of group_size {group_size}"
        elif layer.out_features % INT4_ROW_TILE:
            skipped[name] = f"out_features {layer.out_features} is not a multiple of {INT4_ROW_TILE}"
        else:
            fit.append(name)
    return fit, skipped


def weight_only_int4(model: nn.Module, names: list[str], group_size: int, device: torch.device) -> str:
    """int4 weights in groups; returns the layout used (it depends on the device)."""
    if device.type == "cuda":
        from torchao.quantization import Int4WeightOnlyConfig

        dtype = model.get_submodule(names[0]).weight.dtype
        if dtype != torch.bfloat16:
            raise ConfigError(
                f"WeightOnlyInt4 on CUDA uses tinygemm's tile-packed layout, which needs bfloat16 "
                f"weights; the model is {dtype}: convert it with model.to(torch.bfloat16) first"
            )
        _apply(model, names, Int4WeightOnlyConfig(
            group_size=group_size, int4_packing_format="tile_packed_to_4d", set_inductor_config=False
        ))  # fmt: skip
        return "tile_packed_to_4d"
    if device.type != "cpu":
        raise ConfigError(f"WeightOnlyInt4 has kernels on cpu and cuda, not {device.type}")
    from torchao.prototype.quantization.int4.inference_workflow import (
        PrototypeInt4WeightOnlyConfig,
    )

    _apply(model, names, PrototypeInt4WeightOnlyConfig(group_size=group_size, set_inductor_config=False))
    return "opaque_cpu"


def static_calibrate(
    model: nn.Module, names: list[str], calibration: list[Any]
) -> dict[str, tuple[float, int]]:
    """Per named Linear: the largest |input| over the batches and the input's number of dims."""
    return observe_inputs(
        model, names, calibration, len(calibration),
        observe=lambda x: (float(x.abs().max()), x.dim()),
        combine=lambda a, b: (max(a[0], b[0]), b[1]),
    )  # fmt: skip


def static_linear(
    model: nn.Module, stats: dict[str, tuple[float, int]], per_channel: bool
) -> None:
    """torchao static int8 per Linear: one per-tensor activation scale (symmetric, absmax / 127)
    shaped like the layer's input (torchao requires the same number of dims)."""
    from torchao.quantization import Int8StaticActivationInt8WeightConfig
    from torchao.quantization.granularity import PerTensor

    for name, (amax, ndim) in stats.items():
        scale: Tensor = torch.full([1] * ndim, max(amax, 1e-8) / 127.0)
        _apply(model, [name], Int8StaticActivationInt8WeightConfig(
            act_quant_scale=scale, granularity=[PerTensor(), _granularity(per_channel)],
            set_inductor_config=False,
        ))  # fmt: skip
