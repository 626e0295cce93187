"""The `quantize` stage: int8/int4 for serving (dynamic Linear, weight-only int8 or int4, static
for CNNs), optionally with an ONNX export measured through onnxruntime.

`mode` names the workflow (lowcarb.compress.quantize: DynamicInt8, WeightOnlyInt8,
WeightOnlyInt4, StaticInt8); the other settings are that workflow's own fields, validated by it.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator

from lowcarb.compress import quantize
from lowcarb.compress.quantize import (
    CPU_INT4_GROUP_SIZES,
    MODES,
    DynamicInt8,
    StaticInt8,
    WeightOnlyInt4,
    WeightOnlyInt8,
    Workflow,
)
from lowcarb.errors import ConfigError, LowcarbWarning
from lowcarb.models.gguf import GGUF_BLOCK_WEIGHTS, SMOLLM2_NAME, four_bit_types
from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.registry import get_stage, register_stage, technique_fields, technique_values
from lowcarb.pipeline.tasks import CAUSAL_LM, TASK_NAMES

WORKFLOWS: dict[str, type] = {mode: workflow for workflow, mode in MODES.items()}

# Every workflow's fields, unset by default: the chosen workflow's defaults apply. smooth_alpha
# (dynamic only) may also be "auto": chosen on training batches by how close the int8 logits stay
# to fp32 (lowcarb.compress.quantize.choose_smooth_alpha).
_Fields = technique_fields(
    DynamicInt8, WeightOnlyInt8, WeightOnlyInt4, StaticInt8,
    unset=True, types={"smooth_alpha": float | Literal["auto"]},
)  # fmt: skip


class QuantizeStageConfig(_Fields):  # type: ignore[misc, valid-type]
    mode: Literal["dynamic", "weight_only", "weight_only_int4", "static"] = "dynamic"
    # Also export the (fp32) model before quantizing to ONNX with onnxruntime int8, and record
    # its size and onnxruntime latency (needs the `onnx` extra).
    onnx: bool = False

    def technique(self, smooth_alpha: float | None = None) -> Workflow:
        """The workflow config; "auto" smoothing is resolved by the stage (``smooth_alpha``)."""
        workflow = WORKFLOWS[self.mode]
        values = technique_values(self, workflow, skip_unset=True)
        if values.get("smooth_alpha") == "auto":
            values["smooth_alpha"] = smooth_alpha
        return workflow(**values)

    @model_validator(mode="before")
    @classmethod
    def _fields_of_the_mode(cls, values: Any) -> Any:
        """A field the chosen workflow does not have is named, with the modes it belongs to."""
        if not isinstance(values, dict):
            return values
        mode = values.get("mode", "dynamic")
        workflow = WORKFLOWS.get(mode)
        if workflow is None:
            return values  # the Literal on `mode` says what is allowed
        own = {f.name for f in dataclasses.fields(workflow)} | {"mode", "onnx"}
        foreign = sorted(k for k, v in values.items() if k not in own and v is not None
                         and k in cls.model_fields)
        if foreign:
            users = {k: [m for w, m in MODES.items() if k in {f.name for f in dataclasses.fields(w)}]
                     for k in foreign}
            raise ValueError(
                f"{', '.join(foreign)} not a setting of mode {mode!r} ({workflow.__name__}); "
                + "; ".join(f"{k} applies to mode {', '.join(ms)}" for k, ms in users.items())
            )
        return values


# Static int8 traces the model with torch.fx and the ONNX export feeds classifier batches: neither
# takes a Hugging Face causal LM (its generate loop and KV cache), so a causal-lm recipe may use
# the workflows that replace Linear layers in place.
CAUSAL_LM_MODES = ("weight_only", "weight_only_int4", "dynamic")


def check_quantize(ctx: RunContext, cfg: QuantizeStageConfig) -> None:
    """Before any stage runs: int4's group size has a kernel on the run's device; a causal LM
    takes weight-only int8/int4 or dynamic int8, no ONNX."""
    group_size = getattr(cfg, "group_size", None)
    if cfg.mode == "weight_only_int4" and group_size is not None and ctx.device.type != "cuda" \
            and group_size not in CPU_INT4_GROUP_SIZES:  # fmt: skip
        raise ConfigError(
            f"quantize: group_size {group_size} runs on CUDA only; on {ctx.device.type} use group_size "
            f"{', '.join(map(str, CPU_INT4_GROUP_SIZES))}"
        )
    if cfg.mode == "weight_only_int4":
        # Said before the stages run: after the fine-tuning it would undo, it comes too late.
        steps = list(ctx.recipe.stages)
        mine = next((i for i, s in enumerate(steps) if s.config is cfg), len(steps))
        changed = any(get_stage(s.name).changes_model for s in steps[:mine])
        grid = int4_grid_warning(ctx, cfg.technique(), weights_changed=changed)
        if grid:
            warnings.warn(grid, LowcarbWarning, stacklevel=2)
    if ctx.recipe.task != CAUSAL_LM:
        return
    if cfg.mode not in CAUSAL_LM_MODES:
        raise ConfigError(
            f"quantize: mode {cfg.mode!r} does not apply to task causal-lm (it traces the model with "
            f"torch.fx); use mode {', '.join(CAUSAL_LM_MODES)} (weight_only with compute_dtype: "
            "bfloat16 is the fast one for decoding on CPU)"
        )
    if cfg.onnx:
        raise ConfigError("quantize: onnx: true does not apply to task causal-lm; remove it")


@register_stage("quantize", QuantizeStageConfig, check=check_quantize, tasks=TASK_NAMES)
def quantize_stage(ctx: RunContext, cfg: QuantizeStageConfig) -> RunContext:
    """Quantize the model for serving (int8 or int4)."""
    notes: dict[str, Any] = {}
    if cfg.onnx:
        notes.update(_onnx(ctx))
    config = cfg.technique()
    calibration = None
    if isinstance(config, StaticInt8):
        calibration = ctx.loader("train", ctx.recipe.train.batch_size, shuffle=True, seed=0)
    if cfg.smooth_alpha is not None:
        calibration, config, notes["smooth_alpha"] = _smoothing(ctx, cfg)
    grid = int4_grid_warning(ctx, config, weights_changed=ctx.model_version > 0)
    if grid:
        notes["weights_note"] = grid  # the report prints it beside the quality figures
    summary = quantize.quantize_(ctx.model, config, calibration=calibration)
    assert summary.model is not None
    ctx.model = summary.model
    ctx.note(**summary.to_dict(), **notes)
    return ctx


def int4_grid_warning(ctx: RunContext, config: Workflow, weights_changed: bool) -> str | None:
    """Why int4 at group size 32 would undo this model's fine-tuning, or None.

    A model that arrived as a 4-bit GGUF (SmolLM2's Q4_1) has weights on 16 levels per block of
    32, which is the grid int4 with group size 32 picks (min and max per group). Fine-tuning
    moves weights by far less than half a step, so re-quantizing rounds every weight back to the
    file's value: benchmarks/llm_int4_grid.py measured 100 % of codes unchanged and SmolLM2's
    side accuracy falling from 0.91 to 0.06; group size 64, off that grid, kept 0.795. Quantizing
    the file as loaded is fine (it reproduces it), so the warning needs weights changed since: by
    a stage of this run (`weights_changed`), or in an earlier run (the model is a saved folder).
    """
    if not isinstance(config, WeightOnlyInt4) or config.group_size != GGUF_BLOCK_WEIGHTS:
        return None
    kinds = four_bit_types(ctx.handle.provenance)
    if not kinds:
        return None
    name = str(ctx.recipe.model.name)
    loaded_from_gguf = name == SMOLLM2_NAME or Path(name).suffix.lower() == ".gguf"
    if loaded_from_gguf and not weights_changed:
        return None
    return (
        f"int4 with group_size {config.group_size} re-quantizes weights that came from a "
        f"{'/'.join(kinds)} GGUF on that file's own 32-weight blocks: fine-tuning moves weights by "
        "less than half a grid step, so it is rounded back to the file's values (SmolLM2: side "
        "accuracy 0.91 -> 0.06 in benchmarks/llm_int4_grid.py); set group_size: 64 to keep it"
    )


def _smoothing(ctx: RunContext, cfg: QuantizeStageConfig) -> tuple[list | None, Workflow, Any]:
    """Calibration batches from the training split; with "auto", the strength whose int8 logits
    are closest to fp32 on further training batches (never the dev split the report judges)."""
    config = cfg.technique()
    n = config.calibration_batches  # type: ignore[union-attr]
    loader = ctx.loader("train", ctx.recipe.train.batch_size, shuffle=True, seed=0)
    need = n + (max(2, n // 2) if cfg.smooth_alpha == "auto" else 0)
    batches = [b for _, b in zip(range(need), loader, strict=False)]
    calibration = batches[:n]
    if cfg.smooth_alpha != "auto":
        return calibration, config, cfg.smooth_alpha
    held = batches[n:]
    # A train split too short for held-out batches: judge on the calibration batches, and say so.
    judged_on = "held-out training batches" if held else "the calibration batches (train split too short)"
    alpha, errors = quantize.choose_smooth_alpha(ctx.model, config, calibration, held or calibration)  # type: ignore[arg-type]
    note = {"chosen": alpha, "logit_mse": errors, "judged_on": judged_on}
    return (calibration if alpha is not None else None), cfg.technique(alpha), note


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
