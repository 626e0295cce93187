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
    from lowcarb.compress.export_folder import SequenceTooLong, export_model_folder
    from lowcarb.compress.export_onnx import OnnxExportConfig

    if args.batch_size < 1 or (args.seq_len is not None and args.seq_len < 1):
        raise ConfigError("--batch-size and --seq-len must be >= 1")
    try:
        done = export_model_folder(
            args.model,
            args.out,
            OnnxExportConfig(opset=args.opset, int8=args.int8),
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            threads=args.threads,
        )
    except SequenceTooLong as exc:
        raise ConfigError(f"--seq-len {exc.seq_len}: {exc.model} takes at most {exc.longest} tokens") from None
    summary, latency = done.summary, done.latency
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
        f"onnxruntime latency at batch {done.batch_size}"
        + (f", seq {done.seq_len}" if done.seq_len is not None else "")
        + f", {args.threads} thread(s): "
        f"p50 {latency['p50_ms']:.2f} ms, p95 {latency['p95_ms']:.2f} ms"
    )
    return 0
