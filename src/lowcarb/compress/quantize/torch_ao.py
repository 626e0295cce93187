"""The torch.ao implementations: dynamic int8 (``quantize_dynamic``) and static int8 (FX graph
mode). Imported only when a workflow runs on torch.ao, so lowcarb works where it is missing.

``torch.backends.quantized.engine`` is process-global and packed int8 weights run fastest on the
engine they were packed for, so the caller sets it to the chosen backend and leaves it set.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from lowcarb.compress.quantize.configs import StaticInt8
from lowcarb.errors import ConfigError, ModelError
from lowcarb.models.surgery import call_args, matches_any

__all__ = ["dynamic", "quiet", "static", "static_structure"]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torch.ao warns that it is deprecated on every call; lowcarb chose it on measurement (see
    lowcarb.compress.quantize.backends), so the warning would only be noise for users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        warnings.filterwarnings(
            "ignore", message=".*must run observer before calling calculate_qparams.*"
        )
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")
        yield


def dynamic(model: nn.Module, names: list[str], per_channel: bool) -> None:
    """Swap the named Linears for torch.ao's dynamic int8 Linear, in place."""
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with quiet():
        quantize_dynamic(model, {n: qconfig for n in names}, dtype=torch.qint8, inplace=True)


def _positional(model: nn.Module, batch: Any) -> tuple[Any, ...]:
    """The batch as positional arguments in the order of ``model.forward``'s parameters."""
    args, kwargs = call_args(batch)
    if not kwargs:
        return args
    params = list(inspect.signature(model.forward).parameters)
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise ConfigError(f"batch keys {unknown} are not parameters of the model's forward {params}")
    return tuple(kwargs[p] for p in params if p in kwargs)


def _qconfig_mapping(model: nn.Module, cfg: StaticInt8, backend: str) -> Any:
    from torch.ao.quantization import (
        QConfigMapping,
        default_qconfig,
        get_default_qconfig,
        get_default_qconfig_mapping,
    )

    modules = [n for n, _ in model.named_modules() if n]
    if cfg.targets == ("*",):
        qmap = get_default_qconfig_mapping(backend)
    else:
        # Only the named modules are quantized; everything else stays fp32.
        qmap = QConfigMapping()
        for pat in cfg.targets:
            if not any(matches_any(n, (pat,)) for n in modules):
                raise ConfigError(
                    f"target pattern {pat!r} matches no module; modules are: {modules[:24]}"
                )
        for n in modules:
            if matches_any(n, cfg.targets):
                qmap.set_module_name(n, get_default_qconfig(backend))
    if not cfg.per_channel:
        qmap.set_global(default_qconfig)
    for n in modules:
        if matches_any(n, cfg.exclude):
            qmap.set_module_name(n, None)
    return qmap


def _prepare(model: nn.Module, cfg: StaticInt8, backend: str, example: Any) -> torch.fx.GraphModule:
    from torch.ao.quantization.quantize_fx import prepare_fx

    qmap = _qconfig_mapping(model, cfg, backend)
    try:
        return prepare_fx(model.eval(), qmap, example_inputs=_positional(model, example))
    # torch.fx fails in many ways on dynamic Python (TraceError, TypeError, ValueError, ...).
    except (torch.fx.proxy.TraceError, TypeError, NotImplementedError, ValueError, AttributeError,
            RuntimeError) as exc:
        raise ModelError(
            f"static quantization traces the model with torch.fx, which failed for "
            f"{type(model).__name__} ({type(exc).__name__}: {exc}); use DynamicInt8 (mode "
            "'dynamic') for transformers and other untraceable models, or library='torchao'"
        ) from exc


def static(model: nn.Module, cfg: StaticInt8, backend: str, batches: list[Any]) -> nn.Module:
    """A new traced module with int8 weights and activations, observers fed ``batches``."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with quiet():
        prepared = _prepare(model, cfg, backend, batches[0])
        with torch.inference_mode():
            for batch in batches:
                args, kwargs = call_args(batch)
                prepared(*args, **kwargs)
        return convert_fx(prepared)


def static_structure(model: nn.Module, cfg: StaticInt8, backend: str, example: Any) -> nn.Module:
    """The traced int8 structure without data: the observers' placeholder scales are overwritten
    when the saved state is loaded."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with quiet():
        return convert_fx(_prepare(model, cfg, backend, example))


def quantized_modules(model: nn.Module) -> list[str]:
    """Names of the torch.ao quantized modules in a converted model."""
    return sorted(
        n for n, m in model.named_modules()
        if n and type(m).__module__.startswith("torch.ao.nn.quantized")
    )  # fmt: skip
