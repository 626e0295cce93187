"""Compression verbs: `export-onnx MODEL OUT.onnx` (lowcarb.compress.export_onnx)."""

from __future__ import annotations

import argparse

from lowcarb.cli import common
from lowcarb.errors import ConfigError


def add_export_onnx(sub: common.Subparsers) -> None:
    p = sub.add_parser(
        "export-onnx",
        help="export a saved model to ONNX (optionally onnxruntime int8) and time it in onnxruntime",
        description=(
            "Export a model folder (a run's model/, or a Hugging Face folder) to ONNX with dynamic "
            "batch and sequence axes, check onnxruntime agrees with PyTorch, and measure its "
            "latency through onnxruntime. Needs the onnx extra: pip install 'lowcarb[onnx]'."
        ),
    )
    p.add_argument("model", help="model folder (saved by lowcarb, or a Hugging Face folder)")
    p.add_argument("out", help="output file, ending in .onnx")
    p.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx (onnxruntime dynamic int8) and time that")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the example and the timing (default 32)")
    p.add_argument(
        "--seq-len",
        type=int,
        help="text models: tokens per example (default 64, or the model's maximum if smaller)",
    )
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the timing (default 1)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.set_defaults(handler=_cmd_export_onnx)


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from lowcarb import files
    from lowcarb.compress.export_onnx import (
        OnnxExportConfig,
        export,
        max_sequence_length,
        onnx_latency,
    )
    from lowcarb.compress.saved import is_compressed, load_compressed
    from lowcarb.models import load_model

    if args.batch_size < 1 or (args.seq_len is not None and args.seq_len < 1):
        raise ConfigError("--batch-size and --seq-len must be >= 1")
    out = Path(args.out)
    if out.suffix != ".onnx":
        raise ConfigError(f"the output path should end in .onnx, got {out}")
    files.check_writable_folder(out.parent, "the folder of OUT")  # before any work
    handle = load_compressed(args.model) if is_compressed(args.model) else load_model(args.model)
    if handle.kind == "text":
        if handle.tokenizer is None:
            raise ConfigError(f"{args.model}: a text model without a tokenizer cannot be exported")
        longest = max_sequence_length(handle.model)
        seq_len = args.seq_len or min(64, longest or 64)
        if longest is not None and seq_len > longest:
            raise ConfigError(f"--seq-len {seq_len}: {args.model} takes at most {longest} tokens")
        # A fixed-length example; the exported graph keeps batch and sequence axes free.
        words = " ".join(["token"] * seq_len)
        batch = dict(
            handle.tokenizer(
                [words] * args.batch_size,
                padding=True,
                truncation=True,
                max_length=seq_len,
                return_tensors="pt",
            )
        )
    else:
        if handle.input_shape is None:
            raise ConfigError(f"{args.model}: the model description has no input shape")
        batch = {"pixel_values": torch.rand(args.batch_size, *handle.input_shape)}
    # A missing onnx extra is a DependencyError that says what to install.
    summary = export(handle.model, batch, args.out, OnnxExportConfig(opset=args.opset, int8=args.int8))
    latency = onnx_latency(summary.path, batch, threads=args.threads)
    print(
        f"exported {summary.path} ({summary.size_bytes / 1e6:.2f} MB"
        + (f", fp32 {summary.fp32_size_bytes / 1e6:.2f} MB" if summary.int8 else "")
        + f"); max |onnxruntime - torch| = {summary.max_abs_diff:.2e}"
        + (
            f" (int8 file: {summary.int8_max_abs_diff:.2e}, quantization error)"
            if summary.int8_max_abs_diff is not None
            else ""
        )
    )
    print(
        f"onnxruntime latency at batch {args.batch_size}"
        + (f", seq {batch['input_ids'].shape[1]}" if "input_ids" in batch else "")
        + f", {args.threads} thread(s): "
        f"p50 {latency['p50_ms']:.2f} ms, p95 {latency['p95_ms']:.2f} ms"
    )
    return 0
