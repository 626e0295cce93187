"""Export a saved model folder to ONNX and time it in onnxruntime: what `lowcarb export-onnx`
calls (the CLI parses and prints; the work is here).

    done = export_model_folder("runs/abcd1234/model", "model.onnx", OnnxExportConfig(int8=True))
    done.summary.max_abs_diff, done.latency["p50_ms"]

The example batch is built from the folder's own description: `batch_size` random images of the
model's input shape, or `batch_size` texts of `seq_len` tokens (default 64, or the model's maximum
when that is smaller: small text models take 32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lowcarb import files
from lowcarb.compress.export_onnx import (
    OnnxExportConfig,
    OnnxExportSummary,
    export,
    max_sequence_length,
    onnx_latency,
)
from lowcarb.compress.saved import is_compressed, load_compressed
from lowcarb.errors import ConfigError
from lowcarb.models import ModelHandle, load_model

DEFAULT_SEQ_LEN = 64


class SequenceTooLong(ConfigError):
    """`seq_len` is more than the model's position table holds (the CLI names its flag)."""

    def __init__(self, model: str, seq_len: int, longest: int) -> None:
        self.model, self.seq_len, self.longest = model, seq_len, longest
        super().__init__(f"seq_len {seq_len}: {model} takes at most {longest} tokens")


@dataclass(frozen=True)
class FolderExport:
    summary: OnnxExportSummary
    latency: dict[str, Any]  # onnx_latency's p50_ms, p95_ms, ... on the example batch
    batch_size: int
    seq_len: int | None  # tokens per example for a text model, None for an image model


def export_model_folder(
    model: str | Path,
    out: str | Path,
    config: OnnxExportConfig | None = None,
    *,
    batch_size: int = 32,
    seq_len: int | None = None,
    threads: int = 1,
) -> FolderExport:
    """Load the model folder `model` (lowcarb's or Hugging Face's), export it to `out` (.onnx),
    check onnxruntime against PyTorch and time it at `batch_size` with `threads` threads."""
    if batch_size < 1 or (seq_len is not None and seq_len < 1):
        raise ConfigError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"the output path should end in .onnx, got {out}")
    files.check_writable_folder(out.parent, "the folder of OUT")  # before any work
    handle = load_compressed(model) if is_compressed(model) else load_model(model)
    batch, used_seq_len = example_batch(handle, str(model), batch_size, seq_len)
    # A missing onnx extra is a DependencyError that says what to install.
    summary = export(handle.model, batch, out, config or OnnxExportConfig())
    latency = onnx_latency(summary.path, batch, threads=threads)
    return FolderExport(summary, latency, batch_size, used_seq_len)


def example_batch(
    handle: ModelHandle, name: str, batch_size: int, seq_len: int | None = None
) -> tuple[dict[str, torch.Tensor], int | None]:
    """The example the export traces and the timing runs: (batch, tokens per text or None)."""
    if handle.kind != "text":
        if handle.input_shape is None:
            raise ConfigError(f"{name}: the model description has no input shape")
        return {"pixel_values": torch.rand(batch_size, *handle.input_shape)}, None
    if handle.tokenizer is None:
        raise ConfigError(f"{name}: a text model without a tokenizer cannot be exported")
    longest = max_sequence_length(handle.model)
    tokens = seq_len or min(DEFAULT_SEQ_LEN, longest or DEFAULT_SEQ_LEN)
    if longest is not None and tokens > longest:
        raise SequenceTooLong(name, tokens, longest)
    # A fixed-length example; the exported graph keeps batch and sequence axes free.
    words = " ".join(["token"] * tokens)
    batch = dict(
        handle.tokenizer(
            [words] * batch_size, padding=True, truncation=True, max_length=tokens, return_tensors="pt"
        )
    )
    return batch, int(batch["input_ids"].shape[1])
