"""Device and precision: resolved once, at the edge, then read from the model.

    placement = resolve_placement("auto", "auto")   # recipe field, --device flag, LOWCARB_DEVICE
    model.to(placement.device)                       # the runner places the model, once
    ...
    device = model_device(model)                     # loops read the device from the model
    with autocast(device, precision): loss = ...     # fp32: no autocast at all
    synchronize(device)                              # before any clock read (no-op on CPU)

`device` is `auto | cpu | cuda | cuda:N`; `auto` is `cuda:0` when torch sees a GPU, else `cpu`.
`precision` is `auto | fp32 | bf16 | fp16`; `auto` is fp32 on the CPU and bf16 on a GPU that
has bf16 kernels (Ampere and newer), else fp32. fp16 trains with a gradient scaler.
This module is the one place in lowcarb that names device kinds; everything below the edge
asks it (`autocast`, `grad_scaler`, `synchronize`, `Placement.pin_memory`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from lowcarb.errors import ConfigError, DeviceError

DEVICE_ENV = "LOWCARB_DEVICE"
PRECISION_ENV = "LOWCARB_PRECISION"
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
Precision = Literal["fp32", "bf16", "fp16"]

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_device(text: Any, *, where: str = "device") -> str:
    """The normalised device setting (`"auto"`, `"cpu"`, `"cuda"`, `"cuda:1"`); ConfigError if
    it is none of them. Syntax only: whether the machine has that device is `resolve_device`'s."""
    value = str(text).strip().lower() if isinstance(text, str) else None
    if value is None or not _DEVICE_RE.match(value):
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}{text!r} is not a device; use {DEVICE_CHOICES}")
    return value


def check_precision(text: Any, *, where: str = "precision") -> str:
    """The normalised precision setting (`"auto"`, `"fp32"`, `"bf16"`, `"fp16"`)."""
    value = str(text).strip().lower() if isinstance(text, str) else None
    if value not in ("auto", *PRECISIONS):
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}{text!r} is not a precision; use auto, fp32, bf16 or fp16")
    return value


def _setting(value: str | None, env_name: str, environ: Mapping[str, str]) -> tuple[str, str]:
    """(value, where it came from): the explicit value, else the environment, else auto."""
    if value is not None:
        return value, "device" if env_name == DEVICE_ENV else "precision"
    env = environ.get(env_name, "").strip()
    if env:
        return env, env_name
    return "auto", "default"


def no_cuda_reason() -> str:
    """Why torch sees no CUDA GPU, in words."""
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    return "torch sees no GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES)"


def resolve_device(spec: str | None = None, *, environ: Mapping[str, str] | None = None) -> torch.device:
    """The torch device for a setting (None: `LOWCARB_DEVICE`, else auto). `cuda` becomes
    `cuda:0` so the record names the GPU. A GPU that is not there is a one-line DeviceError."""
    raw, source = _setting(spec, DEVICE_ENV, os.environ if environ is None else environ)
    value = check_device(raw, where=source)
    if value == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if value == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"{source}: {value!r} asks for a CUDA GPU, but {no_cuda_reason()}; "
            "use device cpu, or auto (a GPU when there is one, else the CPU)"
        )
    index = int(value.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(
            f"{source}: {value!r}: torch sees {count} GPU(s) (cuda:0 to cuda:{count - 1}); "
            "pick one of those, or use auto"
        )
    return torch.device("cuda", index)


def bf16_supported(device: torch.device) -> bool:
    """Whether `device` has native bf16 kernels (the CPU always runs bf16 autocast)."""
    if device.type != "cuda":
        return True
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch: no including_emulation argument
        return bool(torch.cuda.is_bf16_supported())


def resolve_precision(
    spec: str | None, device: torch.device, *, environ: Mapping[str, str] | None = None
) -> str:
    """fp32 / bf16 / fp16 for `device` (None: `LOWCARB_PRECISION`, else auto)."""
    raw, source = _setting(spec, PRECISION_ENV, os.environ if environ is None else environ)
    value = check_precision(raw, where=source)
    if value == "auto":
        # bf16 on a GPU that has it: same range as fp32, no loss scaling, about 2x the matmul
        # throughput. On the CPU, autocast to bf16 is slower than fp32 without AMX: stay fp32.
        return "bf16" if device.type == "cuda" and bf16_supported(device) else "fp32"
    if value == "bf16" and not bf16_supported(device):
        raise DeviceError(
            f"{source}: bf16: {device_name(device)} has no bf16 kernels; use precision fp16 "
            "(with loss scaling) or fp32"
        )
    return value


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # no /proc (not Linux): platform knows less, but something
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: torch.device) -> str:
    """What the hardware is called: the GPU's product name, or the CPU model."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    if device.type == "cpu":
        return cpu_name()
    return device.type


@dataclass(frozen=True)
class Placement:
    """Where a run computes, and in which precision; resolved once by `resolve_placement`."""

    device: torch.device
    precision: str  # fp32, bf16 or fp16
    name: str  # the hardware's name, for the record and the report
    requested_device: str = "auto"
    requested_precision: str = "auto"

    @property
    def pin_memory(self) -> bool:
        """Loaders pin host memory only when batches are copied to a GPU (pinning is what makes
        `non_blocking` copies asynchronous; on the CPU it is only overhead)."""
        return self.device.type == "cuda"

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "device_name": self.name,
            "precision": self.precision,
            "device_requested": self.requested_device,
            "precision_requested": self.requested_precision,
        }


def cpu_placement() -> Placement:
    """The CPU in fp32: what a model built without a run around it computes on."""
    return Placement(torch.device("cpu"), "fp32", cpu_name(), "cpu", "fp32")


def resolve_placement(
    device: str | None = None,
    precision: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Placement:
    """Resolve the device and the precision settings together (the edge calls this once)."""
    env = os.environ if environ is None else environ
    dev = resolve_device(device, environ=env)
    prec = resolve_precision(precision, dev, environ=env)
    return Placement(
        device=dev,
        precision=prec,
        name=device_name(dev),
        requested_device=_setting(device, DEVICE_ENV, env)[0],
        requested_precision=_setting(precision, PRECISION_ENV, env)[0],
    )


def dtype_of(precision: str) -> torch.dtype:
    try:
        return _DTYPES[precision]
    except KeyError:
        raise ConfigError(f"precision {precision!r}: use fp32, bf16 or fp16") from None


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for a forward pass on `device`: nothing at fp32 (and on devices autocast
    does not know, such as `meta`), else `torch.autocast` to bf16 / fp16."""
    dtype = dtype_of(precision)
    if dtype is torch.float32 or not torch.amp.is_autocast_available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 training (its gradients underflow without one); None otherwise."""
    if dtype_of(precision) is not torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def synchronize(device: torch.device | str) -> None:
    """Wait until `device` has finished the work queued on it, so a clock read after this sees
    it done. GPUs run asynchronously; on the CPU every operation has finished when it returns."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def precision_on(device: torch.device, placement: Placement) -> str:
    """The precision to use for a model on `device`: the run's, unless the model left the run's
    device (an int8 model served on the CPU by a GPU run), where autocast to the GPU's precision
    would only slow it: fp32 there."""
    return placement.precision if device == placement.device else "fp32"
