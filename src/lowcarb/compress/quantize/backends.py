"""Which library runs each workflow, and why (the figures are benchmarks/quantize_backends.py's).

torch.ao.quantization is deprecated in favour of torchao, whose ``quantize_(model, config)`` is the
maintained API; lowcarb defaults to torchao wherever torchao measured as fast or faster, and keeps
torch.ao only where it measured faster:

- DynamicInt8 -> torch.ao (``quantize_dynamic``, oneDNN/x86 int8 kernels). MiniLM-L6, 1 thread,
  batch 32, this machine under load (run 2026-12-04): torch.ao 1.65x fp32 at batch 32 and 2.27x at
  batch 1; torchao's ``Int8DynamicActivationInt8WeightConfig`` eager 0.04x / 0.16x (its CPU int8
  matmul path is a reference kernel), and after ``torch.compile`` see
  benchmarks/results/quantize_backends.json (compile time included there).
- StaticInt8 -> torch.ao (FX graph mode: conv-BN-ReLU fused into int8 kernels). torchao has no
  eager int8 convolution without torch.ao, so its path quantizes Linear layers only.
- WeightOnlyInt8, WeightOnlyInt4 -> torchao (the only library with these; torch.ao has none).

When torch.ao.quantization cannot be imported (it is deprecated and will leave torch), ``auto``
takes torchao for every workflow and the summary says so; torch.ao's int8 kernels are also CPU-only,
so a model on another device gets torchao too.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch

from lowcarb.compress.quantize.configs import (
    DynamicInt8,
    StaticInt8,
    WeightOnlyInt4,
    WeightOnlyInt8,
    Workflow,
)
from lowcarb.errors import ConfigError, DeviceError

__all__ = ["Choice", "choose", "cpu_flags", "default_backend", "resolve_backend", "torch_ao_available"]

# Device kinds with real kernels, per (workflow, library): the summary reports it.
KERNELS: dict[tuple[type, str], str] = {
    (DynamicInt8, "torch.ao"): "cpu (torch.ao dynamic int8 is CPU-only)",
    (DynamicInt8, "torchao"): "cpu, cuda",
    (StaticInt8, "torch.ao"): "cpu (torch.ao static int8 is CPU-only)",
    (StaticInt8, "torchao"): "cpu, cuda (Linear layers only)",
    (WeightOnlyInt8, "torchao"): "cpu, cuda",
    (WeightOnlyInt4, "torchao"): "cpu (tinygemm CPU kernel), cuda (tinygemm, bfloat16 weights)",
}
_MEASURED = {
    DynamicInt8: "torch.ao measured faster than torchao eager (benchmarks/quantize_backends.py)",
    StaticInt8: "torch.ao fuses and quantizes convolutions; torchao quantizes Linear layers only",
}


@dataclass(frozen=True)
class Choice:
    library: str  # "torch.ao" or "torchao"
    reason: str
    kernels: str


def torch_ao_available() -> bool:
    """True when the torch.ao.quantization entry points lowcarb uses can be imported."""
    try:
        importlib.import_module("torch.ao.quantization.quantize_fx")
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    return True


def choose(config: Workflow, device: torch.device) -> Choice:
    """The library for ``config`` on a model that lives on ``device``."""
    kind = type(config)
    requested = getattr(config, "library", "torchao")
    if kind in (WeightOnlyInt8, WeightOnlyInt4):
        return Choice("torchao", "torchao is the library with this workflow", KERNELS[(kind, "torchao")])
    if requested == "torchao":
        return Choice("torchao", "asked for (library='torchao')", KERNELS[(kind, "torchao")])
    available = torch_ao_available()
    if requested == "torch.ao":
        if not available:
            raise ConfigError(
                "library='torch.ao' but torch.ao.quantization cannot be imported in this torch; "
                "use library='auto' (torchao)"
            )
        if device.type != "cpu":
            raise DeviceError(
                f"torch.ao int8 kernels are CPU-only and the model is on {device}; use "
                "library='auto' or 'torchao', or move the model to cpu"
            )
        return Choice("torch.ao", "asked for (library='torch.ao')", KERNELS[(kind, "torch.ao")])
    if not available:
        return Choice(
            "torchao", "torch.ao.quantization is unavailable: torchao chosen automatically",
            KERNELS[(kind, "torchao")],
        )  # fmt: skip
    if device.type != "cpu":
        return Choice(
            "torchao", f"torch.ao int8 kernels are CPU-only and the model is on {device.type}",
            KERNELS[(kind, "torchao")],
        )  # fmt: skip
    return Choice("torch.ao", _MEASURED[kind], KERNELS[(kind, "torch.ao")])


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass  # no /proc/cpuinfo (not Linux): no flags known, default_backend picks x86
    return set()


def default_backend() -> str:
    """torch.ao's engine: oneDNN where the CPU has AMX int8 tiles (2.31x vs 1.73x for x86 on
    MiniLM here, benchmarks/compress_minilm.py), else x86, else what this build has (qnnpack)."""
    engines = torch.backends.quantized.supported_engines
    if "onednn" in engines and "amx_int8" in cpu_flags():
        return "onednn"
    for name in ("x86", "fbgemm", "qnnpack"):
        if name in engines:
            return name
    raise DeviceError(f"this torch build has no int8 CPU engine (supported: {engines})")


def resolve_backend(backend: str) -> str:
    """The torch.ao engine for ``backend`` ("auto" or a name), checked against this build."""
    name = default_backend() if backend == "auto" else backend
    engines = torch.backends.quantized.supported_engines
    if name not in engines:
        raise ConfigError(
            f"quantized backend {name!r} is not supported by this torch build "
            f"(supported: {engines}); use backend='auto'"
        )
    return name
