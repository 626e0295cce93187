"""ONNX export for edge deployment, with optional onnxruntime int8 and latency through onnxruntime.

    summary = export(model, example_batch, "model.onnx", OnnxExportConfig(int8=True))
    latency = onnx_latency(summary.path, example_batch, threads=1)   # p50_ms, p95_ms

Needs the ``onnx`` extra (``pip install 'lowcarb[onnx]'``: onnx, onnxscript, onnxruntime); the
packages are imported only when these functions run.

Export uses torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``), not the legacy
TorchScript tracer: on MiniLM the tracer froze sequence-length-dependent values into constants
and its graph disagreed with PyTorch by 1e-2 on other lengths, while the dynamo graph agrees to
1e-7. Every export is checked: the summary carries the largest difference between onnxruntime's
and PyTorch's outputs on the example batch.

int8 is onnxruntime's dynamic quantization (8-bit weights per channel, activations quantized to
uint8 at run time), the ONNX counterpart of ``quantize_(model, DynamicInt8())``. Export an fp32 (or
low-rank factorized) model: PyTorch's quantized modules have no ONNX form.

Weight type: onnxruntime multiplies uint8 activations by int8 weights (U8S8) with VPMADDUBSW on x86,
which adds pairs of products into int16 and saturates, unless the CPU has VNNI (AVX-512 VNNI,
AVX-VNNI or AMX), whose instruction accumulates in int32. On a Xeon without VNNI (onnxruntime 1.32)
a 256-256-4 MLP's int8 file ran at 18.2 dB SQNR, while exact integer arithmetic on the same file
gives 41.0 dB: the file was right, the kernel saturated. uint8 weights (U8U8) run at 40.8 dB there.
So ``weight_type="auto"`` takes int8 weights where the CPU has VNNI and uint8 weights elsewhere, as
onnxruntime's quantization guide advises, and the summary records which.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from lowcarb import files
from lowcarb.compress.quantize.backends import cpu_flags
from lowcarb.errors import ConfigError, DependencyError, MissingPathError, ModelError
from lowcarb.models.state import is_subclass_tensor
from lowcarb.models.surgery import without_labels

__all__ = [
    "OnnxExportConfig",
    "OnnxExportSummary",
    "export",
    "load_session",
    "onnx_latency",
    "run_onnx",
]


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(
            f"ONNX export needs the optional package {module!r}: pip install 'lowcarb[onnx]' "
            "(onnx, onnxscript, onnxruntime)"
        ) from exc


@dataclass(frozen=True)
class OnnxExportConfig:
    """opset: the ONNX opset (18 is what the dynamo exporter targets by default).
    int8: also write ``<name>.int8.onnx`` with onnxruntime dynamic int8 and use it as ``path``.
    dynamic_batch / dynamic_sequence: leave the batch axis (and, for 2-D token inputs, the
    sequence axis) free, so one file serves any batch size and sentence length.
    """

    opset: int = 18
    int8: bool = False
    dynamic_batch: bool = True
    dynamic_sequence: bool = True
    # int8 weight type: "int8" (U8S8), "uint8" (U8U8), or "auto" (int8 only on CPUs with VNNI).
    weight_type: Literal["auto", "int8", "uint8"] = "auto"

    def __post_init__(self) -> None:
        if not 13 <= self.opset <= 23:
            raise ConfigError(f"opset must be between 13 and 23, got {self.opset}")
        if self.weight_type not in ("auto", "int8", "uint8"):
            raise ConfigError(f"weight_type must be auto, int8 or uint8, got {self.weight_type!r}")


# CPU flags of an int8 dot product that accumulates in int32 (no int16 saturation).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def int8_weight_type(requested: str = "auto") -> str:
    """The onnxruntime weight type for int8 export on this CPU (see the module docstring)."""
    if requested != "auto":
        return requested
    return "int8" if cpu_flags() & set(VNNI_FLAGS) else "uint8"


@dataclass
class OnnxExportSummary:
    path: str
    fp32_path: str
    size_bytes: int
    fp32_size_bytes: int
    int8: bool
    input_names: list[str]
    opset: int
    max_abs_diff: float  # fp32 ONNX vs PyTorch on the example batch
    int8_max_abs_diff: float | None  # int8 ONNX vs PyTorch (quantization error), when int8
    weight_type: str | None  # "int8" or "uint8" weights in the int8 file, when int8
    export_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _inputs(batch: Any) -> dict[str, Tensor]:
    if isinstance(batch, Mapping):
        inputs = without_labels(batch)
    elif isinstance(batch, Tensor):
        inputs = {"input": batch}
    else:
        raise ValueError(
            f"example batch must be a dict of tensors or a tensor, got {type(batch).__name__}"
        )
    if not inputs or not all(isinstance(v, Tensor) for v in inputs.values()):
        raise ValueError("example batch must hold at least one tensor input besides 'labels'")
    return {k: v.detach().cpu() for k, v in inputs.items()}


def _logits(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return output[0]
    raise ValueError(f"cannot find the logits in a model output of type {type(output).__name__}")


def max_sequence_length(model: nn.Module) -> int | None:
    """The longest token sequence the model takes (its position table), when it has one."""
    config = getattr(model, "config", None)
    for holder, name in ((config, "max_position_embeddings"), (model, "max_length")):
        value = getattr(holder, name, None) if holder is not None else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _check_length(model: nn.Module, inputs: Mapping[str, Tensor]) -> None:
    longest = max_sequence_length(model)
    for name, t in inputs.items():
        if longest is not None and t.ndim == 2 and not t.is_floating_point() and t.shape[1] > longest:
            raise ConfigError(
                f"the example's {name} has {t.shape[1]} tokens but this model takes at most "
                f"{longest}; use a shorter example (export-onnx --seq-len {longest} or less)"
            )


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def _refuse_quantized(model: nn.Module) -> None:
    for mod in model.modules():
        if type(mod).__module__.startswith("torch.ao.nn.quantized") or any(
            is_subclass_tensor(p) for p in mod.parameters(recurse=False)
        ):
            raise ModelError(
                "this model holds torch int8 modules, which have no ONNX form; export the fp32 "
                "model and set OnnxExportConfig(int8=True) for onnxruntime int8"
            )


def _dynamic_shapes(inputs: dict[str, Tensor], cfg: OnnxExportConfig) -> dict[str, dict[int, Any]]:
    batch_dim = torch.export.Dim("batch")
    seq_dim = torch.export.Dim("sequence")
    shapes: dict[str, dict[int, Any]] = {}
    for name, t in inputs.items():
        axes: dict[int, Any] = {}
        if cfg.dynamic_batch:
            axes[0] = batch_dim
        if cfg.dynamic_sequence and t.ndim == 2 and not t.is_floating_point():
            axes[1] = seq_dim  # token ids / masks: (batch, sequence)
        shapes[name] = axes
    return shapes


def _export_graph(
    model: nn.Module, inputs: dict[str, Tensor], positional: bool, out: Path, cfg: OnnxExportConfig
) -> np.ndarray:
    """Write the fp32 graph to ``out``; returns PyTorch's logits on the example (the reference)."""
    dynamic_shapes = _dynamic_shapes(inputs, cfg)
    shapes: tuple[dict[int, Any], ...] | dict[str, dict[int, Any]]
    if positional:
        args, shapes, kwargs = tuple(inputs.values()), tuple(dynamic_shapes.values()), {}
    else:
        args, shapes, kwargs = (), dynamic_shapes, inputs
    with torch.no_grad():
        # The model is exported as it is; its first output is the logits (a Hugging Face output
        # dataclass flattens to its non-None fields, logits first without labels). Written to a
        # temporary name: a failed export leaves no partial .onnx file.
        with files.replace_file(out) as tmp:
            try:
                torch.onnx.export(
                    model, args, str(tmp), kwargs=kwargs or None, input_names=list(inputs),
                    opset_version=cfg.opset, dynamo=True,
                    external_data=False,  # one self-contained file
                    dynamic_shapes=shapes if any(dynamic_shapes.values()) else None,
                )  # fmt: skip
            except (torch.onnx.OnnxExporterError, RuntimeError, ValueError, TypeError) as exc:
                raise ModelError(
                    f"this model cannot be exported to ONNX by torch.export: {_first_line(exc)}"
                ) from exc
        return _logits(model(*args, **kwargs)).float().numpy()


def _int8_file(out: Path, cfg: OnnxExportConfig) -> tuple[Path, str]:
    """onnxruntime dynamic int8 of the fp32 file, with the weight type this CPU runs exactly."""
    quantization = _require("onnxruntime.quantization")
    final = out.with_suffix(".int8.onnx")
    weight_type = int8_weight_type(cfg.weight_type)
    q_type = quantization.QuantType.QInt8 if weight_type == "int8" else quantization.QuantType.QUInt8
    with files.replace_file(final) as tmp:
        quantization.quantize_dynamic(str(out), str(tmp), per_channel=True, weight_type=q_type)
    return final, weight_type


def export(
    model: nn.Module,
    example_batch: Any,
    path: str | Path,
    config: OnnxExportConfig | None = None,
) -> OnnxExportSummary:
    """Export ``model`` (fp32, on CPU) to ``path`` and check it against PyTorch on the example."""
    cfg = config or OnnxExportConfig()
    _require("onnx")
    _require("onnxscript")
    _require("onnxruntime")
    _refuse_quantized(model)
    out = Path(path)
    if out.suffix != ".onnx":
        raise ConfigError(f"the output path should end in .onnx, got {out}")
    inputs = _inputs(example_batch)
    _check_length(model, inputs)
    with files.path_errors(out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        reference = _export_graph(model, inputs, not isinstance(example_batch, Mapping), out, cfg)
    finally:
        model.train(was_training)
    export_s = time.perf_counter() - start
    final, weight_type = _int8_file(out, cfg) if cfg.int8 else (out, None)
    # The fp32 file must match PyTorch (export correctness); the int8 file differs by design.
    fp32_diff = float(np.abs(run_onnx(out, example_batch) - reference).max())
    int8_diff = (
        float(np.abs(run_onnx(final, example_batch) - reference).max()) if cfg.int8 else None
    )
    return OnnxExportSummary(
        path=str(final),
        fp32_path=str(out),
        size_bytes=final.stat().st_size,
        fp32_size_bytes=out.stat().st_size,
        int8=cfg.int8,
        input_names=list(inputs),
        opset=cfg.opset,
        max_abs_diff=fp32_diff,
        int8_max_abs_diff=int8_diff,
        weight_type=weight_type,
        export_s=export_s,
    )


def _session(path: str | Path, threads: int | None) -> Any:
    ort = _require("onnxruntime")
    if not Path(path).is_file():
        raise MissingPathError(f"ONNX file {path} not found")
    options = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(session: Any, batch: Any) -> dict[str, np.ndarray]:
    inputs = _inputs(batch)
    names = [i.name for i in session.get_inputs()]
    if isinstance(batch, Tensor):
        return {names[0]: batch.detach().cpu().numpy()}
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(f"the ONNX model needs inputs {names}; the batch lacks {missing}")
    return {n: inputs[n].numpy() for n in names}


def load_session(path: str | Path, threads: int | None = 1) -> Any:
    """An onnxruntime CPU session for ``path`` with ``threads`` intra-op threads (reuse it for
    many batches: creating a session costs far more than one run)."""
    return _session(path, threads)


def run_onnx(path_or_session: str | Path | Any, batch: Any, threads: int | None = 1) -> np.ndarray:
    """The logits onnxruntime computes for ``batch`` (a path opens a new session each call)."""
    if isinstance(path_or_session, (str, Path)):
        session = _session(path_or_session, threads)
    else:
        session = path_or_session
    return session.run(None, _feeds(session, batch))[0]


def onnx_latency(
    path: str | Path, example_batch: Any, threads: int = 1, *, warmup: int = 3, repeats: int = 20
) -> dict[str, Any]:
    """Wall time of one onnxruntime run on ``example_batch``, in milliseconds (p50/p95), with the
    same keys as ``lowcarb.train.benchmark_latency``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    session = _session(path, threads)
    feeds = _feeds(session, example_batch)
    times_ms: list[float] = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        session.run(None, feeds)
        if i >= warmup:
            times_ms.append((time.perf_counter() - t0) * 1000.0)
    arr = np.asarray(times_ms)
    first = next(iter(feeds.values()))
    return {
        "batch_size": int(first.shape[0]),
        "threads": threads,
        "repeats": repeats,
        "p50_ms": float(np.percentile(arr, 50)),
        "p95_ms": float(np.percentile(arr, 95)),
        "mean_ms": float(arr.mean()),
        "runtime": "onnxruntime",
    }
