"""The NVML session and the GPU inventory (nvidia-ml-py, module `pynvml`), opened once per process.

nvmlInit is slow (tens of milliseconds, seconds on large nodes), so every ledger window and every
sampler shares one session, opened at the first window that looks for GPUs and shut down at exit.
The inventory (each GPU in NVML's order with its UUID, name, PCI bus id, memory and MIG instances)
is read once with it; which GPUs a window looks at is chosen per window from CUDA_VISIBLE_DEVICES
(gpu_visible.py), and how their energy is shared out is gpu_meter.py's business.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

# NVML codes (pynvml's NVML_* constants), repeated for bindings that predate some of them.
_MIG_ENABLE = 1  # NVML_DEVICE_MIG_ENABLE
_SUCCESS = 0
_NOT_SUPPORTED = 3
_NOT_FOUND = 6
_FUNCTION_NOT_FOUND = 13
_ARGUMENT_VERSION_MISMATCH = 25
# Per-process utilisation: the newer call first (drivers >= R550), then the older one.
_UTIL_CALLS = ("nvmlDeviceGetProcessesUtilizationInfo", "nvmlDeviceGetProcessUtilization")


class NvmlUnavailable(Exception):
    """No NVML here; the message says why."""


@dataclass(frozen=True)
class MigDevice:
    """One MIG instance of a GPU: its handle, UUID, GPU-instance id and memory size."""

    handle: Any
    uuid: str
    gpu_instance_id: int
    memory_bytes: int


@dataclass(frozen=True)
class PhysicalGpu:
    """One GPU as NVML sees it; `migs` is empty unless MIG mode is on."""

    nvml_index: int
    handle: Any
    uuid: str
    name: str
    pci_bus_id: str
    memory_bytes: int
    migs: tuple[MigDevice, ...] = ()

    @property
    def label(self) -> str:
        """How details name a GPU: nvidia-smi's index (NVML's), model and UUID prefix."""
        return f"GPU {self.nvml_index} {self.name} ({self.uuid[:12]})"


def as_text(value: Any) -> str:
    """pynvml returns str from most getters but bytes from struct fields such as busId."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlSession:
    """An initialised pynvml module and the GPUs it reported at start."""

    def __init__(self, pynvml: ModuleType) -> None:
        self.nvml = pynvml
        self.error: type[Exception] = pynvml.NVMLError
        self.skipped: list[str] = []  # GPUs NVML listed but would not describe, with the reason
        self.gpus: tuple[PhysicalGpu, ...] = self._inventory()
        # Index into _UTIL_CALLS of the call that works per GPU; len(_UTIL_CALLS): none does.
        self._util_call: dict[int, int] = {}

    def code(self, exc: BaseException) -> int | None:
        """The NVML return code an NVMLError carries."""
        return getattr(exc, "value", None)

    def unsupported(self, exc: BaseException) -> bool:
        """NVML answered NotSupported: the GPU lacks the feature (not a failure)."""
        return self.code(exc) == _NOT_SUPPORTED

    def energy_mj(self, gpu: PhysicalGpu) -> int:
        """The GPU's total-energy counter, mJ since the driver loaded (Volta and newer)."""
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle))

    def power_w(self, gpu: PhysicalGpu) -> float:
        return float(self.nvml.nvmlDeviceGetPowerUsage(gpu.handle)) / 1000.0  # mW

    def compute_pids(self, handle: Any) -> set[int]:
        """Pids holding a compute context on a GPU or MIG instance."""
        try:
            procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except self.error as exc:
            if self.code(exc) in (_NOT_SUPPORTED, _NOT_FOUND):
                return set()
            raise
        return {int(p.pid) for p in procs}

    def gives_sm_samples(self, gpu: PhysicalGpu) -> bool:
        """False once both per-process utilisation calls answered NotSupported for this GPU."""
        return self._util_call.get(gpu.nvml_index, 0) < len(_UTIL_CALLS)

    def sm_samples(self, gpu: PhysicalGpu, since_us: int) -> tuple[dict[int, float] | None, int]:
        """SM utilisation per pid summed over the driver's samples newer than `since_us` (CPU
        timestamp, microseconds), and the newest timestamp seen; None when the driver keeps no
        per-process samples for this GPU (then the caller shares by compute processes).
        """
        call = self._util_call.get(gpu.nvml_index, 0)
        while call < len(_UTIL_CALLS):
            fn = getattr(self.nvml, _UTIL_CALLS[call], None)
            try:
                if fn is None:
                    raise self.error(_FUNCTION_NOT_FOUND)
                samples = fn(gpu.handle, since_us)
            except self.error as exc:
                code = self.code(exc)
                # NotFound: no process was active since `since_us`. The binding raises
                # NVMLError(NVML_SUCCESS) when the driver answers "zero samples" with success.
                if code in (_NOT_FOUND, _SUCCESS):
                    return {}, since_us
                if code not in (_NOT_SUPPORTED, _FUNCTION_NOT_FOUND, _ARGUMENT_VERSION_MISMATCH):
                    raise
                call += 1
                self._util_call[gpu.nvml_index] = call
                continue
            sm: dict[int, float] = {}
            newest = since_us
            for s in samples:
                if int(s.timeStamp) <= since_us:
                    continue  # the driver may repeat the last sample it returned
                sm[int(s.pid)] = sm.get(int(s.pid), 0.0) + float(s.smUtil)
                newest = max(newest, int(s.timeStamp))
            return sm, newest
        return None, since_us

    def _inventory(self) -> tuple[PhysicalGpu, ...]:
        nvml = self.nvml
        gpus = []
        for i in range(int(nvml.nvmlDeviceGetCount())):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                uuid = as_text(nvml.nvmlDeviceGetUUID(handle))
                name = as_text(nvml.nvmlDeviceGetName(handle))
            except self.error as exc:  # e.g. no permission on a GPU another container owns
                self.skipped.append(f"GPU {i}: {exc}")
                continue
            gpus.append(
                PhysicalGpu(
                    i, handle, uuid, name, self._bus_id(handle), self._memory(handle),
                    self._migs(handle),
                )
            )
        return tuple(gpus)

    def _bus_id(self, handle: Any) -> str:
        try:
            return as_text(self.nvml.nvmlDeviceGetPciInfo(handle).busId).lower()
        except self.error:
            return ""  # sorted last; only CUDA_DEVICE_ORDER=PCI_BUS_ID needs it

    def _memory(self, handle: Any) -> int:
        try:
            return int(self.nvml.nvmlDeviceGetMemoryInfo(handle).total)
        except self.error:
            return 0

    def _migs(self, handle: Any) -> tuple[MigDevice, ...]:
        nvml = self.nvml
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        except self.error:  # NotSupported: not a MIG-capable GPU
            return ()
        if current != getattr(nvml, "NVML_DEVICE_MIG_ENABLE", _MIG_ENABLE):
            return ()
        migs = []
        for j in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
                migs.append(
                    MigDevice(
                        mig,
                        as_text(nvml.nvmlDeviceGetUUID(mig)),
                        int(nvml.nvmlDeviceGetGpuInstanceId(mig)),
                        self._memory(mig),
                    )
                )
            except self.error:  # NotFound: an empty slot
                continue
        return tuple(migs)


_lock = threading.Lock()
_session: NvmlSession | None = None
_failure: str | None = None


def _start() -> NvmlSession:
    try:
        pynvml = importlib.import_module("pynvml")
    except ImportError:
        raise NvmlUnavailable("nvml: nvidia-ml-py is not installed") from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError, and OSError when the driver library is absent
        raise NvmlUnavailable(f"nvml: cannot initialise NVML ({exc})") from None
    try:
        session = NvmlSession(pynvml)
    except pynvml.NVMLError as exc:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
        raise NvmlUnavailable(f"nvml: cannot list the GPUs ({exc})") from None
    if not session.gpus:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
        raise NvmlUnavailable("nvml: no visible NVIDIA GPU" + "".join(f"; {s}" for s in session.skipped))
    return session


def open_nvml() -> NvmlSession:
    """The process's NVML session, started at the first call; raises NvmlUnavailable with the reason.

    A failure is remembered too: a machine without NVML does not retry nvmlInit at every window.
    """
    global _session, _failure
    with _lock:
        if _session is not None:
            return _session
        if _failure is not None:
            raise NvmlUnavailable(_failure)
        try:
            _session = _start()
        except NvmlUnavailable as exc:
            _failure = str(exc)
            raise
        return _session


def close_nvml() -> None:
    """Shut the session down (at exit; tests call it to start from scratch)."""
    global _session, _failure
    with _lock:
        session, _session, _failure = _session, None, None
    if session is not None:
        with contextlib.suppress(Exception):  # shutting down is best effort
            session.nvml.nvmlShutdown()


atexit.register(close_nvml)
