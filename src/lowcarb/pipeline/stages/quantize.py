"""The `quantize` stage: int8 for CPU serving (dynamic Linear, weight-only, or static for CNNs),
optionally with an ONNX export measured through onnxruntime."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
    # Also export the (fp32) model before quantizing to ONNX with onnxruntime int8, and record
    # its size and onnxruntime latency (needs the `onnx` extra).
    onnx: bool = False


@register_stage("quantize", QuantizeStageConfig)
def quantize_stage(ctx: RunContext, cfg: QuantizeStageConfig) -> RunContext:
    """Quantize the model to int8 for CPU serving."""
    config = QuantizeConfig(
        mode=cfg.mode,
        per_channel=cfg.per_channel,
        backend=cfg.backend,
        targets=tuple(cfg.targets),
        exclude=tuple(cfg.exclude),
        calibration_batches=cfg.calibration_batches,
    )
    notes: dict[str, object] = {}
    if cfg.onnx:
        notes.update(_onnx(ctx))
    calibration = None
    example = None
    if cfg.mode == "static":
        calibration = ctx.loader("train", ctx.recipe.train.batch_size, shuffle=True, seed=0)
        example = {k: v for k, v in next(iter(calibration)).items() if k != "labels"}
    summary = quantize.apply(ctx.model, config, calibration=calibration)
    assert summary.model is not None
    ctx.model = summary.model
    remember(ctx, **{QUANTIZE: summary, EXAMPLE: example})
    ctx.note(**summary.to_dict(), **notes)
    return ctx


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
