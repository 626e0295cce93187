"""NVIDIA GPU energy through nvidia-ml-py (module `pynvml`), imported only when a window opens.

Per device: the total-energy counter (mJ, Volta and newer) where the GPU has one, else power
samples (mW) integrated by the trapezoid rule. Devices: CUDA_VISIBLE_DEVICES when it lists
indices, else all. The whole device's energy is counted: NVML gives no per-process energy.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from types import ModuleType
from typing import Any

from lowcarb.measure.footprint import ComponentEnergy
from lowcarb.measure.integrate import PowerIntegrator
from lowcarb.measure.probes import Tick


class NvmlUnavailable(Exception):
    """No NVML here; the message says why."""


def _visible_indices(count: int) -> list[int]:
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None or raw.strip() == "":
        return list(range(count)) if raw is None else []
    try:
        return [i for i in (int(x) for x in raw.split(",")) if 0 <= i < count]
    except ValueError:  # UUIDs or MIG names: fall back to every device
        return list(range(count))


def open_nvml() -> ModuleType:
    """The initialised pynvml module; raises NvmlUnavailable with the reason."""
    try:
        pynvml = importlib.import_module("pynvml")
    except ImportError:
        raise NvmlUnavailable("nvml: nvidia-ml-py is not installed") from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError and driver load failures
        raise NvmlUnavailable(f"nvml: cannot initialise NVML ({exc})") from None
    try:
        count = int(pynvml.nvmlDeviceGetCount())
    except Exception as exc:
        pynvml.nvmlShutdown()
        raise NvmlUnavailable(f"nvml: cannot count devices ({exc})") from None
    if count == 0 or not _visible_indices(count):
        pynvml.nvmlShutdown()
        raise NvmlUnavailable("nvml: no visible NVIDIA GPU")
    return pynvml


class NvmlMeter:
    def __init__(self, pynvml: ModuleType) -> None:
        self.nvml = pynvml
        count = int(pynvml.nvmlDeviceGetCount())
        self.handles: list[Any] = [
            pynvml.nvmlDeviceGetHandleByIndex(i) for i in _visible_indices(count)
        ]
        self._start_mj: dict[int, int] = {}
        self._power: dict[int, PowerIntegrator] = {}

    def _add_power(self, tick: Tick) -> None:
        for i, integ in self._power.items():
            integ.add(tick.t_s, self.nvml.nvmlDeviceGetPowerUsage(self.handles[i]) / 1000.0)

    def start(self, tick: Tick) -> None:
        for i, h in enumerate(self.handles):
            try:
                self._start_mj[i] = int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h))
            except self.nvml.NVMLError:  # no counter on this GPU (pre-Volta): sample power
                self._power[i] = PowerIntegrator()
        self._add_power(tick)

    def sample(self, tick: Tick) -> None:
        self._add_power(tick)

    def stop(self, tick: Tick) -> dict[str, ComponentEnergy]:
        self._add_power(tick)
        energy_j = 0.0
        for i, start_mj in self._start_mj.items():
            now_mj = int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handles[i]))
            energy_j += (now_mj - start_mj) / 1000.0
        energy_j += sum(p.energy_j for p in self._power.values())
        kinds = []
        if self._start_mj:
            kinds.append(f"energy counter x{len(self._start_mj)}")
        if self._power:
            kinds.append(f"power samples x{len(self._power)}")
        with contextlib.suppress(Exception):  # shutting down is best effort
            self.nvml.nvmlShutdown()
        return {
            "gpu": ComponentEnergy(
                energy_j, "measured: nvml", f"{len(self.handles)} GPU(s): " + ", ".join(kinds)
            )
        }
