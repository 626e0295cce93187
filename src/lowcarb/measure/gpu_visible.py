"""Which GPUs a job can use: CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER mapped onto NVML's GPUs.

CUDA's rules (CUDA C++ Programming Guide, "CUDA Environment Variables"): entries are indices, GPU
UUIDs (`GPU-8932f937-d72c-...`) or MIG UUIDs (`MIG-<uuid>`, or `MIG-GPU-<uuid>/<gi>/<ci>` before
driver R470); a UUID may be shortened to any prefix that names one device; the list ends at the
first entry that names no device; unset means every GPU, set but empty means none.

Indices count in CUDA's order. `CUDA_DEVICE_ORDER=PCI_BUS_ID` is PCI bus order. The default,
FASTEST_FIRST, ranks GPUs by a speed heuristic CUDA does not publish and that NVML cannot see, so:
- when every GPU is the same model the heuristic ties everywhere and CUDA falls back to PCI bus
  order, so indices map exactly (the usual node of identical GPUs);
- on a machine with mixed models an index could be any GPU, so every GPU is looked at and the
  note says so. Attribution is per process (gpu_meter.py), so GPUs the job did not use still get
  0 J: the cost of the doubt is a few more NVML queries, not a wrong figure.
A MIG instance is metered through its parent GPU (NVML reads energy on whole GPUs only).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lowcarb.measure.nvml import PhysicalGpu

_INDEX = re.compile(r"^-?\d+$")


@dataclass(frozen=True)
class VisibleGpus:
    """The GPUs to meter, in CUDA's order, and how they were chosen (written into the detail)."""

    gpus: tuple[PhysicalGpu, ...]
    note: str


def pci_order(gpus: Sequence[PhysicalGpu]) -> list[PhysicalGpu]:
    """GPUs by PCI bus id (NVML's own order is not guaranteed to be); unknown bus ids last."""
    return sorted(gpus, key=lambda g: (g.pci_bus_id == "", g.pci_bus_id, g.nvml_index))


def _by_prefix(prefix: str, uuids: Sequence[tuple[str, PhysicalGpu]]) -> PhysicalGpu | None:
    """The GPU whose UUID starts with `prefix`, if exactly one does (CUDA rejects ambiguity)."""
    hits = {g.nvml_index: g for uuid, g in uuids if uuid.lower().startswith(prefix.lower())}
    return next(iter(hits.values())) if len(hits) == 1 else None


def resolve_entry(entry: str, ordered: Sequence[PhysicalGpu]) -> PhysicalGpu | None:
    """The physical GPU one CUDA_VISIBLE_DEVICES entry names, or None if it names none."""
    if _INDEX.match(entry):
        i = int(entry)
        return ordered[i] if 0 <= i < len(ordered) else None
    gpu_uuids = [(g.uuid, g) for g in ordered]
    if entry.startswith("MIG-GPU-"):  # MIG-GPU-<gpu uuid>/<gpu instance>/<compute instance>
        parts = entry[len("MIG-"):].split("/")
        parent = _by_prefix(parts[0], gpu_uuids)
        if parent is None or len(parts) != 3 or not parts[1].isdigit():
            return None
        has_instance = any(m.gpu_instance_id == int(parts[1]) for m in parent.migs)
        return parent if has_instance else None
    if entry.startswith("MIG-"):
        return _by_prefix(entry, [(m.uuid, g) for g in ordered for m in g.migs])
    if entry.startswith("GPU-"):
        return _by_prefix(entry, gpu_uuids)
    return None


def visible_gpus(gpus: Sequence[PhysicalGpu], env: Mapping[str, str] | None = None) -> VisibleGpus:
    """The GPUs CUDA_VISIBLE_DEVICES lets a process use (see the module docstring for the rules)."""
    env = os.environ if env is None else env
    raw = env.get("CUDA_VISIBLE_DEVICES")
    order = env.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST").strip().upper() or "FASTEST_FIRST"
    ordered = pci_order(gpus)
    if raw is None:
        return VisibleGpus(tuple(ordered), f"all {len(ordered)} GPU(s)")
    entries = [e.strip() for e in raw.split(",")] if raw.strip() else []
    mixed = len({g.name for g in gpus}) > 1
    if order != "PCI_BUS_ID" and mixed and any(_INDEX.match(e) for e in entries):
        return VisibleGpus(
            tuple(ordered),
            f"CUDA_VISIBLE_DEVICES={raw} counts in CUDA's FASTEST_FIRST order, which NVML cannot "
            f"see on mixed GPU models: all {len(ordered)} GPUs looked at "
            "(set CUDA_DEVICE_ORDER=PCI_BUS_ID or name GPUs by UUID to narrow)",
        )
    chosen: list[PhysicalGpu] = []
    for entry in entries:
        gpu = resolve_entry(entry, ordered)
        if gpu is None:  # CUDA ignores this entry and every one after it
            break
        if gpu not in chosen:
            chosen.append(gpu)
    names = ", ".join(f"GPU {g.nvml_index}" for g in chosen) or "no GPU"
    return VisibleGpus(tuple(chosen), f"CUDA_VISIBLE_DEVICES={raw} -> {names}")
