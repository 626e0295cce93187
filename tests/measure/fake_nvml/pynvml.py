"""A scripted stand-in for nvidia-ml-py's `pynvml` module (the tests' and benchmarks' GPUs).

It keeps the real module's names, signatures, struct field names and error codes (nvidia-ml-py
13.x: NVMLError subclasses built from NVML_ERROR_* codes, ctypes structs for samples and PCI info,
"friendly objects" for process lists, str from name/UUID getters and bytes in struct fields), so
the product code runs its real paths against it. Only the GPUs' behaviour is scripted:

- from Python (tests): `configure(gpus, clock=...)`, then mutate `GPUS[i]["processes"]` or
  `FAIL` while a window is open;
- from a JSON file named by FAKE_NVML_SCRIPT (a `lowcarb measure` subprocess in a benchmark, with
  this folder first on PYTHONPATH): {"t0": unix s, "gpus": [spec, ...]}, the wall clock as time.

A GPU spec (dict): uuid, name, bus_id, memory_mib, power_w (number, or callable of t for tests),
energy_j (callable of t; default power_w x (t - t0)), counter (bool: has the total-energy
counter), utilization ("info": both per-process calls, "legacy": only the older one, "none": no
per-process samples), processes ({pid: SM %}, held for as long as they are listed) or
processes_dir (files named by pid holding "SM START [END]" in unix seconds, written by processes of
other programs; END when the process stopped using the GPU), migs ([{uuid, gi, memory_mib,
processes}]).
Samples: one per process active since the caller's timestamp, its SM % averaged over that span
(a pid-file process that ran half the span counts half), as the driver's samples would give; no
active process: NVMLError_NotFound.
"""

from __future__ import annotations

import json
import os
import string
import time
from ctypes import Structure, c_char, c_uint, c_ulonglong
from pathlib import Path
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_UNKNOWN = 999
NVML_DEVICE_MIG_DISABLE = 0x0
NVML_DEVICE_MIG_ENABLE = 0x1
EPOCH_US = 1_700_000_000_000_000  # sample timestamps are CPU time in microseconds


class NVMLError(Exception):
    """As in pynvml: NVMLError(code) returns the NVMLError_<Name> subclass for that code."""

    _valClassMapping: dict[int, type] = {}
    _errcode_to_string = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }

    def __new__(typ, value):
        if typ == NVMLError:
            typ = NVMLError._valClassMapping.get(value, typ)
        obj = Exception.__new__(typ)
        obj.value = value
        return obj

    def __str__(self):
        return self._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other):
        return self.value == other.value

    __hash__ = Exception.__hash__


def _extract_errors_as_classes() -> None:
    module = globals()  # not sys.modules: tests load this file under their own module object
    for err_name in [x for x in list(module) if x.startswith("NVML_ERROR_")]:
        class_name = "NVMLError_" + string.capwords(
            err_name.replace("NVML_ERROR_", ""), "_"
        ).replace("_", "")
        val = module[err_name]

        def gen_new(v):
            def new(typ, *args):
                return NVMLError.__new__(typ, v)

            return new

        cls = type(class_name, (NVMLError,), {"__new__": gen_new(val)})
        cls.__module__ = __name__
        module[class_name] = cls
        NVMLError._valClassMapping[val] = cls


_extract_errors_as_classes()


class nvmlPciInfo_t(Structure):
    _fields_ = [
        ("busIdLegacy", c_char * 16),
        ("domain", c_uint),
        ("bus", c_uint),
        ("device", c_uint),
        ("pciDeviceId", c_uint),
        ("pciSubSystemId", c_uint),
        ("busId", c_char * 32),
    ]


class c_nvmlMemory_t(Structure):
    _fields_ = [("total", c_ulonglong), ("free", c_ulonglong), ("used", c_ulonglong)]


class c_nvmlProcessUtilizationSample_t(Structure):
    _fields_ = [
        ("pid", c_uint),
        ("timeStamp", c_ulonglong),
        ("smUtil", c_uint),
        ("memUtil", c_uint),
        ("encUtil", c_uint),
        ("decUtil", c_uint),
    ]


class c_nvmlProcessUtilizationInfo_v1_t(Structure):
    _fields_ = [
        ("timeStamp", c_ulonglong),
        ("pid", c_uint),
        ("smUtil", c_uint),
        ("memUtil", c_uint),
        ("encUtil", c_uint),
        ("decUtil", c_uint),
        ("jpgUtil", c_uint),
        ("ofaUtil", c_uint),
    ]


class nvmlFriendlyObject:
    """pynvml turns process-info structs into these (attributes named as the struct fields)."""

    def __init__(self, dictionary: dict[str, Any]) -> None:
        for k, v in dictionary.items():
            setattr(self, k, v)


class _Handle:
    """Stands for c_nvmlDevice_t: a GPU (mig None) or one of its MIG instances."""

    def __init__(self, gpu: int, mig: int | None = None) -> None:
        self.gpu, self.mig = gpu, mig


# -- scripted state -------------------------------------------------------------------------------
GPUS: list[dict[str, Any]] = []
FAIL: dict[str, int] = {}  # function name -> NVML error code it raises while listed
CALLS: dict[str, int] = {}  # function name -> times called
STATE: dict[str, Any] = {"clock": time.time, "t0": 0.0, "init": 0}


def configure(gpus: list[dict[str, Any]], clock: Any = time.time, t0: float = 0.0) -> None:
    GPUS[:] = gpus
    FAIL.clear()
    CALLS.clear()
    STATE.update(clock=clock, t0=t0)  # an open session stays open, as with a real driver


def _load_script() -> None:
    path = os.environ.get("FAKE_NVML_SCRIPT")
    if path:
        script = json.loads(Path(path).read_text())
        configure(script["gpus"], time.time, float(script.get("t0", time.time())))


def _enter(name: str, needs_init: bool = True) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1
    if needs_init and STATE["init"] <= 0:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    if name in FAIL:
        raise NVMLError(FAIL[name])


def _now() -> float:
    return float(STATE["clock"]())


def _spec(handle: _Handle) -> dict[str, Any]:
    spec = GPUS[handle.gpu]
    return spec["migs"][handle.mig] if handle.mig is not None else spec


def _pid_files(spec: dict[str, Any]) -> dict[int, tuple[float, float, float | None]]:
    """{pid: (SM %, start, end or None)} from a folder of pid files "SM START [END]" (unix s)."""
    out = {}
    for f in Path(spec["processes_dir"]).glob("[0-9]*"):
        try:
            sm, start, *end = (float(x) for x in f.read_text().split())
        except (OSError, ValueError):
            continue  # being replaced
        out[int(f.name)] = (sm, start, end[0] if end else None)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _processes(spec: dict[str, Any]) -> dict[int, float]:
    """{pid: SM %} of the processes holding a context now."""
    if "processes_dir" not in spec:
        return {int(k): float(v) for k, v in spec.get("processes", {}).items()}
    return {
        pid: sm for pid, (sm, _, end) in _pid_files(spec).items() if end is None and _alive(pid)
    }


def _activity(spec: dict[str, Any], since: float, now: float) -> dict[int, float]:
    """{pid: mean SM %} over (since, now], as the driver's samples of that span would give.

    Scripted processes hold their SM % over the whole span; pid-file processes count for the
    part of the span they ran (a process that exited mid-span keeps its samples until then).
    """
    if "processes_dir" not in spec:
        return {pid: sm for pid, sm in _processes(spec).items() if sm > 0}
    out = {}
    for pid, (sm, start, end) in _pid_files(spec).items():
        if end is None and not _alive(pid):
            continue  # killed without writing its end: no samples we can place
        ran = min(now, end if end is not None else now) - max(since, start)
        if sm > 0 and ran > 0 and now > since:
            out[pid] = sm * ran / (now - since)
    return out


# -- the API --------------------------------------------------------------------------------------
def nvmlInit():
    _enter("nvmlInit", needs_init=False)
    STATE["init"] += 1


def nvmlShutdown():
    _enter("nvmlShutdown")
    STATE["init"] -= 1


def nvmlDeviceGetCount():
    _enter("nvmlDeviceGetCount")
    return len(GPUS)


def nvmlDeviceGetHandleByIndex(index):
    _enter("nvmlDeviceGetHandleByIndex")
    if not 0 <= index < len(GPUS):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _Handle(index)


def nvmlDeviceGetHandleByUUID(uuid):
    _enter("nvmlDeviceGetHandleByUUID")
    for i, g in enumerate(GPUS):
        if g["uuid"] == uuid:
            return _Handle(i)
        for j, m in enumerate(g.get("migs", [])):
            if m["uuid"] == uuid:
                return _Handle(i, j)
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetUUID(handle):
    _enter("nvmlDeviceGetUUID")
    return _spec(handle)["uuid"]


def nvmlDeviceGetName(handle):
    _enter("nvmlDeviceGetName")
    return GPUS[handle.gpu].get("name", "NVIDIA H100 80GB HBM3")


def nvmlDeviceGetPciInfo(handle):
    _enter("nvmlDeviceGetPciInfo")
    info = nvmlPciInfo_t()
    info.busId = GPUS[handle.gpu].get("bus_id", f"00000000:{handle.gpu + 1:02X}:00.0").encode()
    return info


def nvmlDeviceGetMemoryInfo(handle, version=None):
    _enter("nvmlDeviceGetMemoryInfo")
    total = int(_spec(handle).get("memory_mib", 81559)) * 2**20
    return c_nvmlMemory_t(total, total, 0)


def nvmlDeviceGetMigMode(device):
    _enter("nvmlDeviceGetMigMode")
    spec = GPUS[device.gpu]
    if "migs" not in spec:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return [NVML_DEVICE_MIG_ENABLE, NVML_DEVICE_MIG_ENABLE]


def nvmlDeviceGetMaxMigDeviceCount(device):
    _enter("nvmlDeviceGetMaxMigDeviceCount")
    return 7


def nvmlDeviceGetMigDeviceHandleByIndex(device, index):
    _enter("nvmlDeviceGetMigDeviceHandleByIndex")
    if index >= len(GPUS[device.gpu].get("migs", [])):
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return _Handle(device.gpu, index)


def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(migDevice):
    _enter("nvmlDeviceGetDeviceHandleFromMigDeviceHandle")
    return _Handle(migDevice.gpu)


def nvmlDeviceGetGpuInstanceId(device):
    _enter("nvmlDeviceGetGpuInstanceId")
    if device.mig is None:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return int(_spec(device)["gi"])


def nvmlDeviceGetTotalEnergyConsumption(handle):
    _enter("nvmlDeviceGetTotalEnergyConsumption")
    spec = GPUS[handle.gpu]
    if handle.mig is not None or not spec.get("counter", True):
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    t = _now()
    energy = spec.get("energy_j") or (lambda t: float(spec["power_w"]) * (t - STATE["t0"]))
    return int(1_000_000 + energy(t) * 1000)


def nvmlDeviceGetPowerUsage(handle):
    _enter("nvmlDeviceGetPowerUsage")
    if handle.mig is not None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    power = GPUS[handle.gpu]["power_w"]
    return int((power(_now()) if callable(power) else float(power)) * 1000)


def nvmlDeviceGetComputeRunningProcesses(handle):
    _enter("nvmlDeviceGetComputeRunningProcesses")
    spec = _spec(handle)
    if handle.mig is None and "migs" in spec:  # aggregate view needs privileges in MIG mode
        raise NVMLError(NVML_ERROR_NO_PERMISSION)
    gi = int(spec.get("gi", 0xFFFFFFFF))
    return [
        nvmlFriendlyObject(
            {"pid": pid, "usedGpuMemory": 512 * 2**20, "gpuInstanceId": gi,
             "computeInstanceId": 0 if handle.mig is not None else 0xFFFFFFFF}
        )
        for pid in _processes(spec)
    ]


def _samples(handle, timeStamp, struct):
    spec = _spec(handle)
    if handle.mig is not None or "migs" in spec or spec.get("utilization", "info") == "none":
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    now = _now()
    now_us = EPOCH_US + int(now * 1e6)
    # timeStamp 0 asks for the driver's whole buffer: a few seconds of history
    since = (timeStamp - EPOCH_US) / 1e6 if timeStamp > EPOCH_US else now - 5.0
    active = _activity(spec, since, now) if now_us > timeStamp else {}
    if not active:
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    out = []
    for pid, sm in active.items():
        s = struct()
        s.pid, s.timeStamp, s.smUtil = pid, now_us, int(round(sm))
        out.append(s)
    return out


def nvmlDeviceGetProcessUtilization(handle, timeStamp):
    _enter("nvmlDeviceGetProcessUtilization")
    return _samples(handle, timeStamp, c_nvmlProcessUtilizationSample_t)


def nvmlDeviceGetProcessesUtilizationInfo(handle, timeStamp):
    _enter("nvmlDeviceGetProcessesUtilizationInfo")
    if GPUS[handle.gpu].get("utilization", "info") == "legacy":  # driver older than R550
        raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
    return _samples(handle, timeStamp, c_nvmlProcessUtilizationInfo_v1_t)


_load_script()
