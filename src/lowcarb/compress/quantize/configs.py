"""One typed config per quantization workflow, dispatched by type in ``quantize_``.

- ``DynamicInt8``: int8 weights, activations quantized per call (Linear layers; CPU serving).
  ``smooth_alpha`` turns on SmoothQuant (activation outliers migrated into the weights).
- ``WeightOnlyInt8``: int8 weights, compute in the activations' dtype (memory-bound serving,
  LLM decoding); ``WeightOnlyInt4``: int4 weights in groups along the input dimension.
- ``StaticInt8``: int8 weights and activations with scales calibrated on data (CNNs).

``library`` chooses the implementation: ``"auto"`` takes what measured fastest here (see
``lowcarb.compress.quantize.backends``) and falls back to torchao when torch.ao is missing.
``backend`` is torch.ao's quantized engine (``auto``: oneDNN on CPUs with AMX int8, else x86).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from lowcarb.errors import ConfigError

__all__ = [
    "BACKENDS",
    "LIBRARIES",
    "DynamicInt8",
    "StaticInt8",
    "WeightOnlyInt4",
    "WeightOnlyInt8",
    "Workflow",
]

Library = Literal["auto", "torch.ao", "torchao"]
Backend = Literal["auto", "x86", "fbgemm", "onednn", "qnnpack"]
LIBRARIES: tuple[str, ...] = get_args(Library)
BACKENDS: tuple[str, ...] = get_args(Backend)
INT4_GROUP_SIZES = (32, 64, 128, 256)  # CUDA's tinygemm kernel takes all four
CPU_INT4_GROUP_SIZES = (32, 64, 128)  # the CPU kernel (torchao's Int4OpaqueTensor) asserts these


def _check_selection(targets: tuple[str, ...], exclude: tuple[str, ...]) -> None:
    if isinstance(targets, str) or isinstance(exclude, str):
        raise ConfigError("targets and exclude are tuples of patterns, e.g. ('*encoder*',)")
    if not targets:
        raise ConfigError("targets is empty; use ('*',) to quantize every Linear")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; use one of {list(choices)}")


def _check_calibration(batches: int) -> None:
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise ConfigError(f"calibration_batches must be at least 1, got {batches}")


COMPUTE_DTYPES = ("bfloat16",)


def _check_compute_dtype(value: str | None) -> None:
    if value is not None and value not in COMPUTE_DTYPES:
        raise ConfigError(f"compute_dtype must be one of {list(COMPUTE_DTYPES)} or None, got {value!r}")


def _check_int8_fields(config: DynamicInt8 | StaticInt8) -> None:
    """The fields DynamicInt8 and StaticInt8 share: selection, calibration, library, engine."""
    _check_selection(config.targets, config.exclude)
    _check_calibration(config.calibration_batches)
    _check_choice("library", config.library, LIBRARIES)
    _check_choice("backend", config.backend, BACKENDS)


@dataclass(frozen=True)
class DynamicInt8:
    """int8 Linear weights (per output channel, or one scale), activations quantized per call.

    smooth_alpha: SmoothQuant strength in [0, 1] (0.5 in the paper; None: no smoothing); needs
        calibration batches in ``quantize_``; ``choose_smooth_alpha`` picks it on data.
    calibration_batches: how many calibration batches the smoothing statistics read.
    """

    per_channel: bool = True
    targets: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    smooth_alpha: float | None = None
    calibration_batches: int = 16
    library: Library = "auto"
    backend: Backend = "auto"

    def __post_init__(self) -> None:
        _check_int8_fields(self)
        if self.smooth_alpha is not None and not 0.0 <= self.smooth_alpha <= 1.0:
            raise ConfigError(f"smooth_alpha must be in [0, 1], got {self.smooth_alpha}")


@dataclass(frozen=True)
class WeightOnlyInt8:
    """int8 Linear weights with one scale per output channel (or one), torchao's ``Int8Tensor``;
    the matmul runs in the activations' dtype. Kernels on CPU and CUDA.

    compute_dtype: None (the layer's dtype) or "bfloat16": inputs cast to bf16 and outputs back;
        on CPU the layer becomes PyTorch's ``_weight_int8pack_mm`` kernel (fast only with bf16
        activations; see lowcarb.compress.quantize.compute_dtype). Use it for LLM decoding on CPU.
    """

    per_channel: bool = True
    targets: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    compute_dtype: str | None = None

    def __post_init__(self) -> None:
        _check_selection(self.targets, self.exclude)
        _check_compute_dtype(self.compute_dtype)


@dataclass(frozen=True)
class WeightOnlyInt4:
    """int4 Linear weights, one scale and zero point per ``group_size`` inputs (torchao).

    CPU: torchao's Int4OpaqueTensor (the tinygemm CPU kernel, any float dtype). CUDA: tinygemm's
    tile-packed layout, which needs bfloat16 weights. A Linear whose input size is not a multiple
    of ``group_size`` is left as it is (the summary lists it). group_size 32, 64 or 128 (256 on
    CUDA only). A model that was already 4-bit (a Q4 GGUF such as SmolLM2's) lies on the grid
    group size 32 chooses: fine-tuning it and quantizing with 32 rounds the fine-tuning away
    (benchmarks/llm_int4_grid.py); a larger group, off that grid, keeps more of it. The `quantize`
    stage warns before the run when a recipe does that (pipeline.stages.quantize.int4_grid_warning).

    compute_dtype: None (the layer's dtype) or "bfloat16": the quantized layers get bf16 weights
        and inputs, their outputs are cast back. The CPU kernel is ~10x faster with bf16
        activations than with fp32 (lowcarb.compress.quantize.compute_dtype); use it on CPU.
    """

    group_size: int = 32
    targets: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    compute_dtype: str | None = None

    def __post_init__(self) -> None:
        _check_selection(self.targets, self.exclude)
        _check_compute_dtype(self.compute_dtype)
        if self.group_size not in INT4_GROUP_SIZES:
            raise ConfigError(
                f"group_size must be one of {list(INT4_GROUP_SIZES)}, got {self.group_size}"
            )


@dataclass(frozen=True)
class StaticInt8:
    """int8 weights and activations, activation scales calibrated on ``calibration_batches``.

    torch.ao: FX graph mode, conv-BN-ReLU fused, every supported layer int8 (the model must trace
    with torch.fx). torchao: Linear layers only, one calibrated per-tensor activation scale each.
    targets / exclude: fnmatch patterns over module names (the modules given a qconfig).
    """

    per_channel: bool = True
    targets: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    calibration_batches: int = 16
    library: Library = "auto"
    backend: Backend = "auto"

    def __post_init__(self) -> None:
        _check_int8_fields(self)


Workflow = DynamicInt8 | WeightOnlyInt8 | WeightOnlyInt4 | StaticInt8
