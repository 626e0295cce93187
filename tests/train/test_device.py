"""Device and precision resolution (lowcarb.train.device): CPU for real, CUDA through torch's own
functions patched to describe a GPU machine (this machine has none)."""

import pytest
import torch

from lowcarb.errors import ConfigError, DeviceError, LowcarbError
from lowcarb.train.device import (
    DEVICE_ENV,
    PRECISION_ENV,
    Placement,
    autocast,
    check_device,
    check_precision,
    grad_scaler,
    precision_on,
    resolve_device,
    resolve_placement,
    resolve_precision,
    synchronize,
)


@pytest.fixture
def gpu_machine(monkeypatch):
    """torch as it answers on a machine with two bf16-capable GPUs."""
    state = {"count": 2, "bf16": True, "synced": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: state["count"])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: state["bf16"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA Test GPU")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: state["synced"].append(device))
    return state


@pytest.fixture
def cpu_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.delenv(PRECISION_ENV, raising=False)


def test_settings_are_normalised_and_typos_rejected():
    assert check_device(" CUDA:1 ") == "cuda:1"
    assert check_device("auto") == "auto" and check_device("cpu") == "cpu"
    for bad in ("gpu", "cuda:x", "cuda:", "mps", "", 3, None):
        with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
            check_device(bad)
    assert check_precision("BF16") == "bf16"
    with pytest.raises(ConfigError, match="fp32, bf16 or fp16"):
        check_precision("int8")


def test_auto_is_the_cpu_without_a_gpu(cpu_machine):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")  # no setting, no env: auto
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


def test_cuda_without_cuda_is_one_line_that_says_what_to_use(cpu_machine):
    for spec in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(DeviceError) as info:
            resolve_device(spec)
        message = str(info.value)
        assert isinstance(info.value, LowcarbError) and "\n" not in message
        assert "use device cpu, or auto" in message and repr(spec) in message


def test_the_environment_is_read_when_no_setting_is_given(cpu_machine, monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(DeviceError, match=DEVICE_ENV):  # the message names where it came from
        resolve_device(None)
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit setting wins
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    with pytest.raises(ConfigError, match=DEVICE_ENV):
        resolve_device(None)
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert resolve_precision(None, torch.device("cpu")) == "bf16"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_auto_is_cuda_0_in_bf16_on_a_gpu_machine(gpu_machine, monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    placement = resolve_placement("auto", "auto")
    assert placement.device == torch.device("cuda", 0)
    assert placement.precision == "bf16" and placement.name == "NVIDIA Test GPU"
    assert placement.pin_memory
    assert placement.to_dict() == {
        "device": "cuda:0",
        "device_name": "NVIDIA Test GPU",
        "precision": "bf16",
        "device_requested": "auto",
        "precision_requested": "auto",
    }
    assert resolve_device("cuda") == torch.device("cuda", 0)  # the record names the GPU
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_a_gpu_index_that_is_not_there_names_the_ones_that_are(gpu_machine):
    with pytest.raises(DeviceError, match=r"sees 2 GPU\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_gpus_without_bf16_default_to_fp32_and_refuse_bf16(gpu_machine):
    gpu_machine["bf16"] = False
    cuda = torch.device("cuda", 0)
    assert resolve_precision("auto", cuda) == "fp32"
    assert resolve_precision("fp16", cuda) == "fp16"
    with pytest.raises(DeviceError, match="NVIDIA Test GPU has no bf16 kernels; use precision fp16"):
        resolve_precision("bf16", cuda)


def test_cpu_placement_records_the_cpu(cpu_machine):
    placement = resolve_placement()
    assert placement.device == torch.device("cpu") and placement.precision == "fp32"
    assert not placement.pin_memory and placement.name  # the CPU model, never empty
    assert placement.to_dict()["device"] == "cpu"


def test_autocast_only_below_fp32():
    layer = torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)
    cpu = torch.device("cpu")
    with autocast(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
        assert layer(x).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with autocast(cpu, "fp16"):
        assert layer(x).dtype == torch.float16
    with autocast(torch.device("meta"), "bf16"):  # a device autocast does not know: nothing
        assert torch.nn.Linear(4, 2, device="meta")(x.to("meta")).dtype == torch.float32


def test_only_fp16_gets_a_gradient_scaler():
    cpu = torch.device("cpu")
    assert grad_scaler(cpu, "fp32") is None and grad_scaler(cpu, "bf16") is None
    scaler = grad_scaler(cpu, "fp16")
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()


def test_synchronize_waits_for_gpus_and_is_free_on_the_cpu(gpu_machine):
    synchronize("cpu")
    synchronize(torch.device("meta"))
    assert gpu_machine["synced"] == []
    synchronize("cuda:1")
    assert gpu_machine["synced"] == [torch.device("cuda", 1)]


def test_a_model_served_off_the_runs_device_runs_in_fp32():
    run = Placement(torch.device("cuda", 0), "bf16", "gpu")
    assert precision_on(torch.device("cuda", 0), run) == "bf16"
    assert precision_on(torch.device("cpu"), run) == "fp32"  # int8 served on the CPU
