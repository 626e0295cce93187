"""Quantization for serving: one typed config per workflow, one verb, dispatched by type.

    summary = quantize_(model, DynamicInt8())                          # int8 Linear, CPU serving
    summary = quantize_(model, DynamicInt8(smooth_alpha=0.5), calibration=batches)   # SmoothQuant
    summary = quantize_(llm, WeightOnlyInt4(group_size=32))            # LLM decoding, CPU or CUDA
    summary = quantize_(cnn, StaticInt8(), calibration=loader)
    qmodel = summary.model        # the same model, or a new traced module (static on torch.ao)

Which library runs each workflow and why: ``lowcarb.compress.quantize.backends`` (torchao by
default, torch.ao where it measured faster, torchao automatically where torch.ao is missing).
The summary says which library ran (``library``, ``library_reason``) and on which device kinds
the workflow has kernels (``kernels``).

The quantized model carries the config in its transform log, so ``lowcarb.compress.saved``
saves it (safetensors + JSON, no pickles) and rebuilds it on a fresh model; ``save`` / ``load``
here are those functions for a bare model.
"""

from lowcarb.compress.quantize.accounting import linear_weight_bytes, sqnr_db, tensor_bytes
from lowcarb.compress.quantize.api import MODES, quantize_
from lowcarb.compress.quantize.backends import default_backend, torch_ao_available
from lowcarb.compress.quantize.choose_alpha import choose_smooth_alpha
from lowcarb.compress.quantize.configs import (
    CPU_INT4_GROUP_SIZES,
    DynamicInt8,
    StaticInt8,
    WeightOnlyInt4,
    WeightOnlyInt8,
    Workflow,
)
from lowcarb.compress.quantize.smooth import (
    SmoothedLinear,
    activation_absmax,
    smooth,
    smoothing_scales,
)
from lowcarb.compress.saved import load_transformed as load
from lowcarb.compress.saved import save_transformed as save

# Every transform in lowcarb is `apply(model, config)`; for quantization that is `quantize_`.
apply = quantize_

__all__ = [
    "CPU_INT4_GROUP_SIZES",
    "MODES",
    "DynamicInt8",
    "SmoothedLinear",
    "StaticInt8",
    "WeightOnlyInt4",
    "WeightOnlyInt8",
    "Workflow",
    "activation_absmax",
    "apply",
    "choose_smooth_alpha",
    "default_backend",
    "linear_weight_bytes",
    "load",
    "quantize_",
    "save",
    "smooth",
    "smoothing_scales",
    "sqnr_db",
    "tensor_bytes",
    "torch_ao_available",
]
