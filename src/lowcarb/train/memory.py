"""Memory while training: its peak (`PeakMemory`) and a way to need less (`gradient_checkpointing`).

Peak memory of a block of work: `max_memory_allocated` on CUDA, the peak resident set on CPU.

    with PeakMemory(model_device(model)) as peak:
        fit(...)
    peak.peak_bytes, peak.start_bytes, peak.method

On CPU the figure is the process's peak resident set size (what the operating system had to give
it: weights, gradients, optimiser state, activations, plus the Python and library code already
resident at the start, `start_bytes`). On Linux the kernel keeps that peak (VmHWM in
/proc/self/status) and resets it when "5" is written to /proc/self/clear_refs, so the figure is
exact and costs nothing; elsewhere a thread samples the resident set every 5 ms (it can miss a
spike shorter than that). Freed memory that the allocator keeps for reuse still counts as
resident, so compare two configurations in two fresh processes, not one after the other.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import torch
from torch import nn

from lowcarb.errors import ModelError

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
SAMPLE_INTERVAL_S = 0.005


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _reset_kernel_peak() -> bool:
    """Reset VmHWM to the current resident set; False where the kernel does not offer that."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class PeakMemory:
    """Context manager measuring peak memory on `device` while the block runs (see module doc)."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.peak_bytes = 0
        self.start_bytes = 0
        self.method = ""
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
            self.method = f"torch.cuda.max_memory_allocated ({self.device})"
            return self
        self.start_bytes = psutil.Process().memory_info().rss
        if _reset_kernel_peak():
            self.method = "peak resident set (VmHWM, /proc/self/status)"
            return self
        self.method = f"resident set sampled every {SAMPLE_INTERVAL_S * 1000:.0f} ms"
        self.peak_bytes = self.start_bytes
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.peak_bytes = max(self.peak_bytes, process.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            return
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self.peak_bytes = max(self.peak_bytes, psutil.Process().memory_info().rss)
            return
        self.peak_bytes = _status_kib("VmHWM") or psutil.Process().memory_info().rss

    @property
    def added_bytes(self) -> int:
        """Peak minus what was in use at the start (the work's own tensors, for CUDA exactly)."""
        return max(0, self.peak_bytes - self.start_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_memory_bytes": self.peak_bytes,
            "start_memory_bytes": self.start_bytes,
            "peak_memory_method": self.method,
        }


@contextlib.contextmanager
def gradient_checkpointing(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Within the block, recompute activations in the backward pass instead of keeping them (less
    memory, about a third more compute). Non-reentrant checkpointing also works when the inputs
    need no gradient (LoRA freezes the embeddings)."""
    if not enabled:
        yield
        return
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ModelError(
            f"{type(model).__name__} does not support gradient checkpointing; set "
            "train.gradient_checkpointing: false"
        )
    # transformers 5 renamed the methods (activation_*); older releases only have gradient_*.
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[operator]
        disable = model.activation_checkpointing_disable
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[operator]
        disable = model.gradient_checkpointing_disable
    try:
        yield
    finally:
        disable()  # type: ignore[operator]
