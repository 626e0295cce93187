"""benchmarks/gpu_check.py: one line and exit 2 without a GPU; --dry-run runs every step end to end
on the CPU (tiny model) and writes its JSON. The GPU figures themselves come only from a GPU."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_stops_at_once_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check would run")
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    err = done.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("gpu_check: needs an NVIDIA GPU") and "--dry-run" in err


def test_dry_run_runs_every_step_and_writes_the_results(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWCARB_SST2_DIR", str(tmp_path / "no-sst2"))  # the synthetic data path
    out = tmp_path / "gpu_check.json"
    assert load_script().main(["--dry-run", "--tiny", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    figures = result["figures"]
    assert figures["dry_run"] is True and figures["placement"]["device"] == "cpu"
    assert figures["data"].startswith("synthetic sentences")
    for precision in ("fp32", "bf16"):
        arm = figures["fine_tune"][precision]
        assert arm["steps"] == 4 and arm["step_ms"] > 0 and arm["precision"] == precision
        assert arm["footprint"]["energy_j"] > 0
    lora = figures["lora"]
    assert lora["trainable_params"] < 10_000 and lora["lora_modules_left_after_merge"] == 0
    assert lora["merged_vs_unmerged_max_abs_diff"] < 1e-4
    assert len(figures["latency"]) == 8  # 2 models x 2 precisions x batch 1 and 32
    assert all(v["device"] == "cpu" and v["repeats"] == 3 for v in figures["latency"].values())
    nvml = figures["nvml_energy"]
    assert "counter_j" in nvml or nvml["skipped"].startswith("nvml")  # no GPU here: why not
    windows = figures["per_process_share"]
    assert set(windows) == {"other_process_only", "both_equal_load", "alone", "second_process_pid"}
    assert windows["both_equal_load"]["this_process_loads_gpu"] is True
    ids = {c["id"]: c for c in result["claims"]}
    assert set(ids) == {"gpu.bf16_step_speedup", "gpu.nvml_counter_vs_power_ratio"}
    assert ids["gpu.bf16_step_speedup"]["value"] is None  # a CPU dry run claims nothing
