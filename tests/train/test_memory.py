"""Peak memory: the kernel's peak resident set on Linux, a sampler elsewhere, CUDA's own counter."""

import types

import pytest
import torch

from lowcarb.train import memory
from lowcarb.train.memory import PeakMemory

BIG = 256 * 2**20  # bytes


def _allocate_and_free():
    block = torch.ones(BIG // 4, dtype=torch.float32)  # touched, so resident
    total = float(block[::4096].sum())
    del block
    return total


@pytest.mark.skipif(not memory._STATUS.exists(), reason="no /proc/self/status: the sampler test covers this")
def test_kernel_peak_sees_a_freed_allocation():
    with PeakMemory("cpu") as peak:
        _allocate_and_free()
    assert peak.method.startswith("peak resident set (VmHWM")
    assert peak.added_bytes >= 0.9 * BIG
    # A second window starts from the current resident set again, not from the old peak.
    with PeakMemory("cpu") as quiet:
        pass
    assert quiet.added_bytes < 0.5 * BIG


def test_sampler_where_the_kernel_keeps_no_peak(monkeypatch):
    monkeypatch.setattr(memory, "_reset_kernel_peak", lambda: False)
    with PeakMemory("cpu") as peak:
        block = torch.ones(BIG // 4)
        import time

        time.sleep(0.05)  # ten sampling intervals with the block resident
        del block
    assert peak.method.startswith("resident set sampled every")
    assert peak.added_bytes >= 0.9 * BIG
    assert set(peak.to_dict()) == {"peak_memory_bytes", "start_memory_bytes", "peak_memory_method"}


def test_cuda_reads_max_memory_allocated(monkeypatch):
    calls = []
    fake = types.SimpleNamespace(
        synchronize=lambda device: calls.append(("sync", str(device))),
        reset_peak_memory_stats=lambda device: calls.append(("reset", str(device))),
        memory_allocated=lambda device: 1_000,
        max_memory_allocated=lambda device: 9_000,
    )
    monkeypatch.setattr(memory.torch, "cuda", fake)
    with PeakMemory(torch.device("cuda", 1)) as peak:
        calls.append(("work", ""))
    assert calls == [("sync", "cuda:1"), ("reset", "cuda:1"), ("work", ""), ("sync", "cuda:1")]
    assert (peak.start_bytes, peak.peak_bytes, peak.added_bytes) == (1_000, 9_000, 8_000)
    assert peak.method == "torch.cuda.max_memory_allocated (cuda:1)"
