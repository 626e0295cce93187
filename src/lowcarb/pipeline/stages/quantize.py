"""The `quantize` stage: int8 for CPU serving (dynamic Linear, weight-only, or static for CNNs),
optionally with an ONNX export measured through onnxruntime."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lowcarb.compress import quantize
from lowcarb.compress.quantize import QuantizeConfig
from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.registry import StageConfig, register_stage
from lowcarb.pipeline.stages._compressed import EXAMPLE, QUANTIZE, remember


class QuantizeStageConfig(StageConfig):
    mode: Literal["dynamic", "weight_only", "static"] = "dynamic"
    per_channel: bool = True
    backend: Literal["auto", "x86", "fbgemm", "onednn", "qnnpack"] = "auto"
    targets: list[str] = ["*"]
    exclude: list[str] = []
    calibration_batches: int = Field(default=16, gt=0)
    # dynamic only: SmoothQuant strength in [0, 1], or "auto" to choose it on training batches by
    # how close the int8 logits stay to fp32 (see lowcarb.compress.quantize); unset: no smoothing.
    smooth_alpha: float | Literal["auto"] | None = None
    # Also export the (fp32) model before quantizing to ONNX with onnxruntime int8, and record
    # its size and onnxruntime latency (needs the `onnx` extra).
    onnx: bool = False

    @model_validator(mode="after")
    def _check_smoothing(self) -> QuantizeStageConfig:
        if self.smooth_alpha is not None and self.mode != "dynamic":
            raise ValueError(f"smooth_alpha applies to mode 'dynamic' only, not {self.mode!r}")
        if isinstance(self.smooth_alpha, float) and not 0.0 <= self.smooth_alpha <= 1.0:
            raise ValueError(f"smooth_alpha must be in [0, 1] or 'auto', got {self.smooth_alpha}")
        return self


@register_stage("quantize", QuantizeStageConfig)
def quantize_stage(ctx: RunContext, cfg: QuantizeStageConfig) -> RunContext:
    """Quantize the model to int8 for CPU serving."""
    alpha = cfg.smooth_alpha if isinstance(cfg.smooth_alpha, float) else None
    config = QuantizeConfig(
        mode=cfg.mode,
        per_channel=cfg.per_channel,
        backend=cfg.backend,
        targets=tuple(cfg.targets),
        exclude=tuple(cfg.exclude),
        calibration_batches=cfg.calibration_batches,
        smooth_alpha=alpha,
    )
    notes: dict[str, object] = {}
    if cfg.onnx:
        notes.update(_onnx(ctx))
    calibration = None
    example = None
    if cfg.mode == "static":
        calibration = ctx.loader("train", ctx.recipe.train.batch_size, shuffle=True, seed=0)
        example = {k: v for k, v in next(iter(calibration)).items() if k != "labels"}
    if cfg.smooth_alpha is not None:
        calibration, config, notes["smooth_alpha"] = _smoothing(ctx, config, cfg)
    summary = quantize.apply(ctx.model, config, calibration=calibration)
    assert summary.model is not None
    ctx.model = summary.model
    remember(ctx, **{QUANTIZE: summary, EXAMPLE: example})
    ctx.note(**summary.to_dict(), **notes)
    return ctx


def _smoothing(
    ctx: RunContext, config: QuantizeConfig, cfg: QuantizeStageConfig
) -> tuple[list, QuantizeConfig, object]:
    """Calibration batches from the training split; with "auto", the strength whose int8 logits
    are closest to fp32 on further training batches (never the dev split the report judges)."""
    import dataclasses

    loader = ctx.loader("train", ctx.recipe.train.batch_size, shuffle=True, seed=0)
    need = cfg.calibration_batches + (max(2, cfg.calibration_batches // 2) if cfg.smooth_alpha == "auto" else 0)
    batches = [b for _, b in zip(range(need), loader, strict=False)]
    calibration = batches[: cfg.calibration_batches]
    if cfg.smooth_alpha != "auto":
        return calibration, config, cfg.smooth_alpha
    held = batches[cfg.calibration_batches :]
    # A train split too short for held-out batches: judge on the calibration batches, and say so.
    judged_on = "held-out training batches" if held else "the calibration batches (train split too short)"
    alpha, errors = quantize.choose_smooth_alpha(ctx.model, config, calibration, held or calibration)
    note = {"chosen": alpha, "logit_mse": errors, "judged_on": judged_on}
    config = dataclasses.replace(config, smooth_alpha=alpha)
    return (calibration if alpha is not None else None), config, note


def _onnx(ctx: RunContext) -> dict[str, object]:
    from lowcarb.compress.export_onnx import OnnxExportConfig, export, onnx_latency

    threads = ctx.recipe.evaluation.threads
    batch32 = next(iter(ctx.loader("dev", batch_size=32)))
    batch1 = next(iter(ctx.loader("dev", batch_size=1)))
    summary = export(
        ctx.model, batch32, ctx.artifacts_dir / "onnx" / "model.onnx", OnnxExportConfig(int8=True)
    )
    out: dict[str, object] = {f"onnx_{k}": v for k, v in summary.to_dict().items()}
    for name, batch in (("b1", batch1), ("b32", batch32)):
        lat = onnx_latency(summary.path, batch, threads=threads)
        out[f"onnx_int8_latency_{name}_p50_ms"] = lat["p50_ms"]
    return out
