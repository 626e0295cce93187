"""int8 quantization for CPU serving: dynamic, weight-only, and static post-training.

    summary = apply(model, QuantizeConfig(mode="dynamic"))          # model changed in place
    summary = apply(cnn, QuantizeConfig(mode="static"), calibration=loader)
    qmodel = summary.model                                          # static returns a new module

Which implementation, per mode, and why (measured on this project's CPU, an Intel Xeon with
AVX-512 VNNI and AMX, MiniLM-L6 at batch 32 on SST-2 dev batches, 1 thread; see
benchmarks/compress_minilm.py and benchmarks/RESULTS.md for the current figures):

- dynamic (int8 weights, activations quantized per call): ``torch.ao.quantization.quantize_dynamic``
  with per-channel weight scales. torch.ao is deprecated in favour of torchao, but torchao's eager
  ``Int8DynamicActivationInt8WeightConfig`` ran at 1.2x over fp32 in a probe here (it is written
  for torch.compile), while torch.ao ran at 1.7-1.8x on the x86/fbgemm engine and 2.1-2.9x on the
  oneDNN engine, which uses the AMX int8 tiles (benchmark run 2026-11-28 08:04 UTC: 2.31x oneDNN
  vs 1.73x x86, dev accuracy 0.8647 vs fp32 0.8761; with smoothing 2.36x and 0.8773). So
  ``backend="auto"`` picks ``onednn`` where the CPU has AMX int8 and ``x86`` elsewhere. Per-channel scales are the default:
  they bound each output row's error by that row's own range (tests show +3 dB and more on layers
  with uneven rows); on the fine-tuned MiniLM the two were within two dev sentences of each other
  (per-channel -1.15 points, per-tensor -0.92).
- dynamic with ``smooth_alpha`` (SmoothQuant, Xiao et al., ICML 2023): dynamic int8 quantizes
  each activation tensor with one scale, so a few input channels with large values (BERT's
  LayerNorm outputs have them) leave little resolution for the rest. Smoothing divides input
  channel j by s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha) (maxima over calibration batches)
  and multiplies weight column j by s_j: the same product in exact arithmetic, with the outliers
  moved into the weights, which are quantized per channel. BERT is post-LayerNorm (the LayerNorm
  output also feeds the residual), so s cannot be folded into the LayerNorm: each smoothed Linear
  divides its input itself (``SmoothedLinear``), one elementwise op beside an int8 matmul.
- weight_only (int8 weights, fp32 compute; for memory-bound serving where RAM or download size is
  the constraint): our own ``Int8WeightOnlyLinear`` that stores int8 weights with per-channel
  scales and dequantizes in the forward pass (0.92x fp32 speed, dev accuracy -0.11 points,
  3.97x smaller Linear weights). PyTorch's CPU ``_weight_int8pack_mm`` kernel was 80x slower than
  fp32 matmul for fp32 inputs here, and torchao's ``Int8WeightOnlyConfig`` was no
  faster than fp32 in eager mode (1.02x) while adding a dependency. Weight-only int8 saves memory,
  not time, on this CPU.
- static (int8 weights and activations, scales calibrated on data; for CNNs such as the digits
  CNN): torch.ao FX graph mode (``prepare_fx`` / ``convert_fx``), which fuses conv-BN-ReLU and runs
  on the same int8 kernels. torchao's replacement (PT2E) needs torch.export and only pays off
  under torch.compile.

``torch.backends.quantized.engine`` is process-global and the packed int8 weights run fastest on
the engine they were packed for, so ``apply`` sets it to the chosen backend and leaves it set.

Saving never pickles: ``save`` writes every tensor (int8 values, scales, zero points, fp32
weights) to safetensors and the structure (config plus how to rebuild each quantized tensor) to
JSON; ``load`` re-applies the same config to a freshly built fp32 model and loads the tensors.
"""

from __future__ import annotations

import contextlib
import fnmatch
import inspect
import json
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from dataclasses import replace as dataclasses_replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Int8WeightOnlyLinear",
    "QuantizeConfig",
    "QuantizeSummary",
    "SmoothedLinear",
    "activation_absmax",
    "apply",
    "choose_smooth_alpha",
    "default_backend",
    "linear_weight_bytes",
    "load",
    "save",
    "smoothing_scales",
    "sqnr_db",
]

Mode = Literal["dynamic", "weight_only", "static"]
Backend = Literal["auto", "x86", "fbgemm", "onednn", "qnnpack"]
MODES = ("dynamic", "weight_only", "static")
BACKENDS = ("auto", "x86", "fbgemm", "onednn", "qnnpack")
QUANTIZE_FILE = "quantize.json"
TENSORS_FILE = "model.safetensors"


@dataclass(frozen=True)
class QuantizeConfig:
    """mode: ``dynamic`` (int8 Linear, CPU serving), ``weight_only`` (int8 storage, fp32 compute),
    or ``static`` (calibrated int8 for CNNs; needs ``calibration`` batches in ``apply``).

    per_channel: one scale per output channel (recommended: it keeps the accuracy).
    backend: the torch quantized engine; ``auto`` picks oneDNN on CPUs with AMX int8, else x86.
    targets / exclude: fnmatch patterns over module names (dynamic and weight_only: Linear
        modules; static: the modules given a qconfig).
    calibration_batches: how many calibration batches static mode feeds through the observers
        (and dynamic mode through the smoothing statistics).
    smooth_alpha: dynamic mode only; migrate activation outliers into the weights (SmoothQuant)
        with this strength in [0, 1] (0.5 in the paper; None: no smoothing). Needs calibration
        batches in ``apply``; ``choose_smooth_alpha`` picks it on calibration data.
    """

    mode: Mode = "dynamic"
    per_channel: bool = True
    backend: Backend = "auto"
    targets: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    calibration_batches: int = 16
    smooth_alpha: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown quantization mode {self.mode!r}; use one of {list(MODES)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; use one of {list(BACKENDS)}")
        if isinstance(self.targets, str) or isinstance(self.exclude, str):
            raise ValueError("targets and exclude are tuples of patterns, e.g. ('*encoder*',)")
        if not self.targets:
            raise ValueError("targets is empty; use ('*',) to quantize every Linear")
        if self.calibration_batches < 1:
            raise ValueError(
                f"calibration_batches must be at least 1, got {self.calibration_batches}"
            )
        if self.smooth_alpha is not None:
            if self.mode != "dynamic":
                raise ValueError(f"smooth_alpha applies to mode='dynamic' only, not {self.mode!r}")
            if not 0.0 <= self.smooth_alpha <= 1.0:
                raise ValueError(f"smooth_alpha must be in [0, 1], got {self.smooth_alpha}")


@dataclass
class QuantizeSummary:
    params_before: int
    params_after: int
    modules_changed: list[str]
    mode: str
    backend: str
    linear_bytes_before: int
    linear_bytes_after: int
    config: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def linear_size_ratio(self) -> float:
        """fp32 / int8 bytes of the Linear weights (scales and zero points included)."""
        return self.linear_bytes_before / max(self.linear_bytes_after, 1)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "model"}
        out["linear_size_ratio"] = self.linear_size_ratio
        return out


# ---------------------------------------------------------------------------------------------
# backend choice
# ---------------------------------------------------------------------------------------------


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass  # no /proc/cpuinfo (not Linux): no flags known, default_backend picks x86
    return set()


def default_backend() -> str:
    """oneDNN where the CPU has AMX int8 tiles (2.8x vs 1.7x for x86 on MiniLM here), else x86,
    else whatever this torch build supports (qnnpack on ARM)."""
    engines = torch.backends.quantized.supported_engines
    if "onednn" in engines and "amx_int8" in _cpu_flags():
        return "onednn"
    for name in ("x86", "fbgemm", "qnnpack"):
        if name in engines:
            return name
    raise RuntimeError(f"this torch build has no int8 CPU engine (supported: {engines})")


def _resolve_backend(cfg: QuantizeConfig) -> str:
    backend = default_backend() if cfg.backend == "auto" else cfg.backend
    engines = torch.backends.quantized.supported_engines
    if backend not in engines:
        raise ValueError(
            f"quantized backend {backend!r} is not supported by this torch build "
            f"(supported: {engines}); use backend='auto'"
        )
    return backend


# ---------------------------------------------------------------------------------------------
# weight-only int8 Linear
# ---------------------------------------------------------------------------------------------


class Int8WeightOnlyLinear(nn.Module):
    """int8 weights with fp32 scales (per output channel, or one), dequantized in ``forward``.

    Symmetric (zero point 0): the weights of trained layers are centred, and symmetric scales keep
    the dequantization one multiply.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, per_channel: bool) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("weight_scale", torch.ones(out_features if per_channel else 1))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @classmethod
    def from_float(cls, layer: nn.Linear, per_channel: bool = True) -> Int8WeightOnlyLinear:
        w = layer.weight.detach().float()
        amax = w.abs().amax(dim=1) if per_channel else w.abs().amax().reshape(1)
        scale = (amax / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        new = cls(layer.in_features, layer.out_features, layer.bias is not None, per_channel)
        new.weight_int8.copy_(q)
        new.weight_scale.copy_(scale)
        if layer.bias is not None:
            assert new.bias is not None
            new.bias.data.copy_(layer.bias.detach().float())
        return new

    def dequantized_weight(self) -> Tensor:
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight_int8.to(x.dtype) * self.weight_scale.to(x.dtype)[:, None]
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        per = "per_channel" if self.weight_scale.numel() > 1 else "per_tensor"
        return f"in_features={self.in_features}, out_features={self.out_features}, {per}"


# ---------------------------------------------------------------------------------------------
# activation smoothing (SmoothQuant)
# ---------------------------------------------------------------------------------------------


class SmoothedLinear(nn.Module):
    """``linear(x / input_scale)``, where ``linear``'s weight columns were multiplied by
    ``input_scale``: the dense layer's function, with its input's outlier channels scaled down
    before the (dynamic int8) ``linear`` quantizes them."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        # Shape readers (bert_structure.describe, size and FLOPs accounting) see a Linear's shape.
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.register_buffer("input_scale", torch.ones(linear.in_features))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x / self.input_scale.to(x.dtype))


def activation_absmax(
    model: nn.Module, names: list[str], calibration: Iterable[Any], max_batches: int
) -> dict[str, Tensor]:
    """Per input channel, the largest |input| each named Linear saw over the calibration batches."""
    amax: dict[str, Tensor] = {}
    handles = []
    for name in names:

        def hook(_mod: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            a = args[0].detach().abs().flatten(0, -2).amax(0).float()
            amax[name] = torch.maximum(amax[name], a) if name in amax else a

        handles.append(model.get_submodule(name).register_forward_pre_hook(hook))
    seen = 0
    try:
        with torch.no_grad():
            for batch in calibration:
                if seen >= max_batches:
                    break
                args, kwargs = _model_inputs(batch)
                model(*args, **kwargs)
                seen += 1
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise ValueError("the calibration data has no batches; smoothing needs at least one")
    return amax


def smoothing_scales(amax: Tensor, weight: Tensor, alpha: float) -> Tensor:
    """s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha), with channels that never fired left at 1."""
    w = weight.detach().abs().amax(0).float()
    s = amax.clamp_min(1e-5) ** alpha / w.clamp_min(1e-5) ** (1.0 - alpha)
    return torch.where(amax > 0, s, torch.ones_like(s)).clamp_min(1e-5)


def _smooth(
    model: nn.Module, names: list[str], alpha: float, calibration: Iterable[Any], batches: int
) -> list[str]:
    """Wrap each named Linear in a SmoothedLinear; returns the names of the inner Linears."""
    amax = activation_absmax(model, names, calibration, batches)
    silent = [n for n in names if n not in amax]
    if silent:
        raise ValueError(
            f"Linear modules {silent} never ran on the calibration batches, so they have no "
            "activation statistics; exclude them (QuantizeConfig.exclude) or check the batches"
        )
    inner = []
    with torch.no_grad():
        for name in names:
            linear = model.get_submodule(name)
            assert isinstance(linear, nn.Linear)
            scale = smoothing_scales(amax[name], linear.weight, alpha)
            # A new Parameter, not an in-place multiply: a weight tied elsewhere stays as it was.
            linear.weight = nn.Parameter(
                linear.weight * scale.to(linear.weight.dtype), requires_grad=False
            )
            wrapped = SmoothedLinear(linear)
            wrapped.input_scale.copy_(scale)
            _set_module(model, name, wrapped)
            inner.append(f"{name}.linear")
    return inner


def _smoothed_structure(model: nn.Module, names: list[str]) -> list[str]:
    """The SmoothedLinear wrappers without statistics (scales of 1, loaded from a file after)."""
    for name in names:
        linear = model.get_submodule(name)
        assert isinstance(linear, nn.Linear)
        _set_module(model, name, SmoothedLinear(linear))
    return [f"{n}.linear" for n in names]


def choose_smooth_alpha(
    model: nn.Module,
    config: QuantizeConfig,
    calibration: Iterable[Any],
    held_out: Iterable[Any],
    alphas: Iterable[float | None] = (None, 0.3, 0.5, 0.7, 0.85),
) -> tuple[float | None, dict[str, float]]:
    """The smoothing strength whose int8 model's outputs are closest (mean squared error) to the
    fp32 model's on ``held_out`` batches; ``model`` is left as it was. Choose on data the model
    will be judged on never: pass training or calibration batches, not the evaluation set.

    Returns the best alpha (None: no smoothing) and the error of every alpha tried.
    """
    import copy

    held = list(held_out)
    calib = list(calibration)
    model.eval()
    with torch.no_grad():
        reference = [_logits(model, b) for b in held]
    errors: dict[str, float] = {}
    best: tuple[float, float | None] | None = None
    for alpha in alphas:
        trial = copy.deepcopy(model)
        cfg = dataclasses_replace(config, smooth_alpha=alpha)
        summary = apply(trial, cfg, calibration=calib if alpha is not None else None)
        assert summary.model is not None
        with torch.no_grad():
            err = sum(
                float(((_logits(summary.model, b) - r) ** 2).mean())
                for b, r in zip(held, reference, strict=True)
            ) / max(1, len(held))
        errors[str(alpha)] = err
        if best is None or err < best[0]:
            best = (err, alpha)
    assert best is not None
    return best[1], errors


def _logits(model: nn.Module, batch: Any) -> Tensor:
    args, kwargs = _model_inputs(batch)
    out = model(*args, **kwargs)
    return (out.logits if hasattr(out, "logits") else out).float()


# ---------------------------------------------------------------------------------------------
# target selection
# ---------------------------------------------------------------------------------------------


def _match(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _select_linears(model: nn.Module, cfg: QuantizeConfig) -> list[str]:
    linears = [n for n, m in model.named_modules() if n and type(m) is nn.Linear]
    if not linears:
        raise ValueError("the model has no nn.Linear modules to quantize")
    listing = ", ".join(linears[:24]) + (
        f", ... ({len(linears) - 24} more)" if len(linears) > 24 else ""
    )
    for pat in cfg.targets:
        if not any(fnmatch.fnmatchcase(n, pat) for n in linears):
            raise ValueError(
                f"target pattern {pat!r} matches no Linear module; Linear modules are: {listing}"
            )
    chosen = [n for n in linears if _match(n, cfg.targets) and not _match(n, cfg.exclude)]
    if not chosen:
        raise ValueError(
            f"targets {list(cfg.targets)} minus exclude {list(cfg.exclude)} leave no Linear; "
            f"Linear modules are: {listing}"
        )
    return chosen


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


# ---------------------------------------------------------------------------------------------
# size accounting
# ---------------------------------------------------------------------------------------------


def _qtensor_bytes(q: Tensor) -> int:
    n = q.numel() * q.element_size()
    if q.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scales, zps = q.q_per_channel_scales(), q.q_per_channel_zero_points()
        n += scales.numel() * scales.element_size() + zps.numel() * zps.element_size()
    else:
        n += 8 + 8  # one float64 scale, one int64 zero point
    return n


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights of every Linear-like module (fp32, int8 dynamic/static, weight-only),
    scales and zero points included, biases excluded."""
    from torch.ao.nn.quantized import Linear as QLinear
    from torch.ao.nn.quantized.dynamic import Linear as DQLinear

    total = 0
    for mod in model.modules():
        if isinstance(mod, (DQLinear, QLinear)):
            total += _qtensor_bytes(mod.weight())
        elif isinstance(mod, Int8WeightOnlyLinear):
            total += (
                mod.weight_int8.numel() + mod.weight_scale.numel() * mod.weight_scale.element_size()
            )
        elif isinstance(mod, nn.Linear):
            total += mod.weight.numel() * mod.weight.element_size()
    return total


def _count(model: nn.Module) -> int:
    """Parameters, counting int8 weights held in packed form or buffers as parameters too."""
    from lowcarb.train.size import count_parameters

    return count_parameters(model)


# ---------------------------------------------------------------------------------------------
# the transform
# ---------------------------------------------------------------------------------------------


def _model_inputs(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A batch is a dict (``labels`` dropped, the rest passed as keywords) or a tensor/tuple."""
    if isinstance(batch, Mapping):
        return (), {k: v for k, v in batch.items() if k != "labels"}
    if isinstance(batch, (tuple, list)):
        return (batch[0],), {}
    return (batch,), {}


def _dynamic(model: nn.Module, cfg: QuantizeConfig, names: list[str]) -> None:
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    qconfig = per_channel_dynamic_qconfig if cfg.per_channel else default_dynamic_qconfig
    quantize_dynamic(model, {n: qconfig for n in names}, dtype=torch.qint8, inplace=True)


def _weight_only(model: nn.Module, cfg: QuantizeConfig, names: list[str]) -> None:
    for n in names:
        mod = model.get_submodule(n)
        assert isinstance(mod, nn.Linear)
        _set_module(model, n, Int8WeightOnlyLinear.from_float(mod, cfg.per_channel))


def _positional(model: nn.Module, batch: Any) -> tuple[Any, ...]:
    """The batch as positional arguments in the order of ``model.forward``'s parameters."""
    args, kwargs = _model_inputs(batch)
    if not kwargs:
        return args
    params = list(inspect.signature(model.forward).parameters)
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise ValueError(f"batch keys {unknown} are not parameters of the model's forward {params}")
    return tuple(kwargs[p] for p in params if p in kwargs)


def _static_prepare(model: nn.Module, cfg: QuantizeConfig, backend: str, example: Any) -> nn.Module:
    from torch.ao.quantization import (
        QConfigMapping,
        get_default_qconfig,
        get_default_qconfig_mapping,
    )
    from torch.ao.quantization.quantize_fx import prepare_fx

    if cfg.targets == ("*",):
        qmap = get_default_qconfig_mapping(backend)
    else:
        # Only the named modules are quantized; everything else stays fp32.
        qmap = QConfigMapping()
        modules = [n for n, _ in model.named_modules() if n]
        for pat in cfg.targets:
            if not any(fnmatch.fnmatchcase(n, pat) for n in modules):
                raise ValueError(
                    f"target pattern {pat!r} matches no module; modules are: {modules[:24]}"
                )
        for n in modules:
            if _match(n, cfg.targets):
                qmap.set_module_name(n, get_default_qconfig(backend))
    if not cfg.per_channel:
        from torch.ao.quantization import default_qconfig

        qmap.set_global(default_qconfig)
    for n, _ in model.named_modules():
        if n and _match(n, cfg.exclude):
            qmap.set_module_name(n, None)
    try:
        return prepare_fx(model.eval(), qmap, example_inputs=_positional(model, example))
    except (torch.fx.proxy.TraceError, TypeError, NotImplementedError) as exc:
        raise ValueError(
            f"static quantization traces the model with torch.fx, which failed for "
            f"{type(model).__name__} ({type(exc).__name__}: {exc}); use mode='dynamic' for "
            "transformers and other untraceable models"
        ) from exc


def _static(
    model: nn.Module, cfg: QuantizeConfig, backend: str, calibration: Iterable[Any] | None
) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    if calibration is None:
        raise ValueError(
            "static quantization needs calibration data: apply(model, QuantizeConfig(mode='static'), "
            "calibration=<a loader of training batches>)"
        )
    batches = []
    for i, batch in enumerate(calibration):
        if i >= cfg.calibration_batches:
            break
        batches.append(batch)
    if not batches:
        raise ValueError("the calibration data is empty; pass a loader with at least one batch")
    prepared = _static_prepare(model, cfg, backend, batches[0])
    with torch.inference_mode():
        for batch in batches:
            args, kwargs = _model_inputs(batch)
            prepared(*args, **kwargs)
    return convert_fx(prepared)


@contextlib.contextmanager
def _quiet_torch_ao() -> Iterator[None]:
    """torch.ao warns that it is deprecated on every call; we chose it on measurement (see the
    module docstring), so the warning would only be noise for users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        warnings.filterwarnings(
            "ignore", message=".*must run observer before calling calculate_qparams.*"
        )
        yield


def apply(
    model: nn.Module,
    config: QuantizeConfig | None = None,
    calibration: Iterable[Any] | None = None,
) -> QuantizeSummary:
    """Quantize ``model`` for CPU inference; the result is in ``summary.model``.

    dynamic and weight_only change ``model`` in place (``summary.model is model``); static builds a
    new traced module. The model is put in eval mode: int8 modules are inference-only.
    """
    with _quiet_torch_ao():
        return _apply(model, config or QuantizeConfig(), calibration)


def _apply(
    model: nn.Module, cfg: QuantizeConfig, calibration: Iterable[Any] | None
) -> QuantizeSummary:
    backend = _resolve_backend(cfg)
    torch.backends.quantized.engine = backend
    model.eval()
    params_before = _count(model)
    bytes_before = linear_weight_bytes(model)
    if cfg.mode == "static":
        out = _static(model, cfg, backend, calibration)
        changed = sorted(
            n for n, m in out.named_modules()
            if n and type(m).__module__.startswith("torch.ao.nn.quantized")
        )  # fmt: skip
    else:
        if calibration is not None and cfg.smooth_alpha is None:
            raise ValueError(
                f"calibration data is only used by mode='static' and by smoothing "
                f"(smooth_alpha), not by {cfg.mode!r} without it"
            )
        names = _select_linears(model, cfg)
        if cfg.smooth_alpha is not None:
            if calibration is None:
                raise ValueError(
                    "smooth_alpha needs calibration batches: apply(model, config, calibration=...)"
                )
            names = _smooth(model, names, cfg.smooth_alpha, calibration, cfg.calibration_batches)
        if cfg.mode == "dynamic":
            _dynamic(model, cfg, names)
        else:
            _weight_only(model, cfg, names)
        out = model
        changed = names
    return QuantizeSummary(
        params_before=params_before,
        params_after=_count(out),
        modules_changed=changed,
        mode=cfg.mode,
        backend=backend,
        linear_bytes_before=bytes_before,
        linear_bytes_after=linear_weight_bytes(out),
        config=asdict(cfg),
        model=out,
    )


def sqnr_db(reference: Tensor, approx: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(||ref||^2 / ||ref - approx||^2)."""
    ref = reference.detach().double()
    noise = (ref - approx.detach().double()).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref.pow(2).sum() / noise))


# ---------------------------------------------------------------------------------------------
# save / reload without pickles
# ---------------------------------------------------------------------------------------------

_QDTYPES = {"qint8": torch.qint8, "quint8": torch.quint8, "qint32": torch.qint32}
_DTYPES = {
    str(d): d for d in (torch.qint8, torch.quint8, torch.qint32, torch.float16, torch.float32)
}


def _encode(key: str, value: Any, tensors: dict[str, Tensor]) -> dict[str, Any]:
    if isinstance(value, Tensor):
        if value.is_quantized:
            tensors[f"{key}::int"] = value.int_repr().contiguous().clone()
            dtype = str(value.dtype).removeprefix("torch.")
            if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                tensors[f"{key}::scales"] = value.q_per_channel_scales().contiguous().clone()
                tensors[f"{key}::zero_points"] = (
                    value.q_per_channel_zero_points().contiguous().clone()
                )
                return {
                    "kind": "qtensor_per_channel",
                    "dtype": dtype,
                    "axis": int(value.q_per_channel_axis()),
                }
            return {
                "kind": "qtensor_per_tensor",
                "dtype": dtype,
                "scale": float(value.q_scale()),
                "zero_point": int(value.q_zero_point()),
            }
        tensors[key] = value.detach().contiguous().clone()
        return {"kind": "tensor"}
    if isinstance(value, (tuple, list)):
        return {
            "kind": "tuple" if isinstance(value, tuple) else "list",
            "items": [_encode(f"{key}::{i}", v, tensors) for i, v in enumerate(value)],
        }
    if value is None:
        return {"kind": "none"}
    if isinstance(value, torch.dtype):
        return {"kind": "dtype", "value": str(value)}
    if isinstance(value, (bool, int, float, str)):
        return {"kind": "scalar", "value": value}
    raise TypeError(f"cannot save state entry {key!r} of type {type(value).__name__}")


def _decode(key: str, spec: dict[str, Any], tensors: Mapping[str, Tensor]) -> Any:
    kind = spec["kind"]
    if kind == "tensor":
        return tensors[key]
    if kind == "qtensor_per_channel":
        return torch._make_per_channel_quantized_tensor(
            tensors[f"{key}::int"],
            tensors[f"{key}::scales"],
            tensors[f"{key}::zero_points"],
            spec["axis"],
        ).to(device="cpu")  # int8 kernels are CPU kernels
    if kind == "qtensor_per_tensor":
        return torch._make_per_tensor_quantized_tensor(
            tensors[f"{key}::int"], spec["scale"], spec["zero_point"]
        )
    if kind in ("tuple", "list"):
        items = [_decode(f"{key}::{i}", s, tensors) for i, s in enumerate(spec["items"])]
        return tuple(items) if kind == "tuple" else items
    if kind == "none":
        return None
    if kind == "dtype":
        if spec["value"] not in _DTYPES:
            raise ValueError(f"unsupported dtype {spec['value']!r} in saved state entry {key!r}")
        return _DTYPES[spec["value"]]
    if kind == "scalar":
        return spec["value"]
    raise ValueError(
        f"unknown entry kind {kind!r} for {key!r}: the file was not written by lowcarb"
    )


def encode_state(
    model: nn.Module,
) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, dict[str, Any]]]:
    """The state dict as plain tensors (for safetensors) plus JSON describing how to rebuild each
    entry (quantized tensors, packed tuples, dtypes) and the modules' state-dict versions."""
    tensors: dict[str, Tensor] = {}
    state = model.state_dict()
    entries = {k: _encode(k, v, tensors) for k, v in state.items()}
    # Module versions tell torch.ao's loaders which layout the entries use.
    versions = {k: dict(v) for k, v in getattr(state, "_metadata", {}).items()}
    return tensors, entries, versions


def decode_state(
    entries: Mapping[str, Any], versions: Mapping[str, Any], tensors: Mapping[str, Tensor]
) -> OrderedDict[str, Any]:
    """The inverse of ``encode_state``: a state dict ``load_state_dict`` accepts."""
    state = OrderedDict((k, _decode(k, spec, tensors)) for k, spec in entries.items())
    state._metadata = OrderedDict((k, dict(v)) for k, v in versions.items())  # type: ignore[attr-defined]
    return state


def structure(
    model: nn.Module, config: QuantizeConfig, backend: str, example: Any = None
) -> nn.Module:
    """Give a freshly built fp32 ``model`` the quantized structure ``config`` produces (weights
    to be loaded after); static mode needs one ``example`` batch to trace."""
    with _quiet_torch_ao():
        torch.backends.quantized.engine = backend
        model.eval()
        if config.mode == "static":
            if example is None:
                raise ValueError(
                    "loading a static-quantized model needs example=<one input batch> to trace it"
                )
            from torch.ao.quantization.quantize_fx import convert_fx

            # The observers see no data: their placeholder scales are overwritten on loading.
            return convert_fx(_static_prepare(model, config, backend, example))
        names = _select_linears(model, config)
        if config.smooth_alpha is not None:
            names = _smoothed_structure(model, names)
        if config.mode == "dynamic":
            _dynamic(model, config, names)
        else:
            _weight_only(model, config, names)
        return model


def save(
    summary_or_model: QuantizeSummary | nn.Module,
    folder: str | Path,
    config: QuantizeConfig | None = None,
) -> Path:
    """Write ``model.safetensors`` (all tensors) and ``quantize.json`` (config and structure).

    Pass the summary returned by ``apply`` (it carries the model and the config), or a model and
    its config.
    """
    from safetensors.torch import save_file

    if isinstance(summary_or_model, QuantizeSummary):
        model = summary_or_model.model
        cfg_dict = summary_or_model.config
        backend = summary_or_model.backend
    else:
        if config is None:
            raise ValueError(
                "save(model, folder, config): the QuantizeConfig used is needed to reload"
            )
        model, cfg_dict, backend = summary_or_model, asdict(config), _resolve_backend(config)
    assert model is not None
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors, entries, versions = encode_state(model)
    save_file(tensors, str(out / TENSORS_FILE))
    meta = {
        "format": 1,
        "config": cfg_dict,
        "backend": backend,
        "entries": entries,
        "versions": versions,
    }
    (out / QUANTIZE_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return out


def read_config(folder: str | Path) -> QuantizeConfig:
    return config_from_dict(_read_meta(Path(folder))["config"])


def config_from_dict(values: Mapping[str, Any]) -> QuantizeConfig:
    """A QuantizeConfig from its JSON form (``summary.config``)."""
    cfg = dict(values)
    cfg["targets"] = tuple(cfg.get("targets", ("*",)))
    cfg["exclude"] = tuple(cfg.get("exclude", ()))
    return QuantizeConfig(**cfg)


def _read_meta(src: Path) -> dict[str, Any]:
    path = src / QUANTIZE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {src} a folder written by quantize.save?")
    return json.loads(path.read_text())


def load(model: nn.Module, folder: str | Path, example: Any = None) -> nn.Module:
    """Quantize a freshly built fp32 ``model`` (same architecture, any weights) the way the saved
    one was, then load the saved tensors. Static mode needs one ``example`` batch to trace."""
    with _quiet_torch_ao():
        return _load(model, Path(folder), example)


def _load(model: nn.Module, src: Path, example: Any) -> nn.Module:
    from safetensors.torch import load_file

    meta = _read_meta(src)
    out = structure(model, read_config(src), meta["backend"], example)
    tensors = load_file(str(src / TENSORS_FILE))
    out.load_state_dict(decode_state(meta["entries"], meta.get("versions", {}), tensors))
    return out
