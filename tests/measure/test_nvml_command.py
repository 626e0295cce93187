"""`lowcarb measure -- CMD` on a scripted GPU: a real child process, its share, show and export."""

from __future__ import annotations

import csv
import io
import json
import sys
import textwrap
import time

import pytest

from lowcarb.cli import main

from .fakegpu import OTHER, gpu

# A child that holds the GPU (its pid file "SM START [END]" in the fake's process folder).
USER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    mine, start = Path(sys.argv[1]) / str(os.getpid()), time.time()
    mine.write_text(f"{sys.argv[2]} {start}")
    time.sleep(float(sys.argv[3]))
    mine.write_text(f"{sys.argv[2]} {start} {time.time()}")
    """
)


def measure(capsys, *child):
    code = main(["measure", "--sample-interval", "0.2", "--json", "--", sys.executable, *child])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return out["run_id"], out["footprint"]


@pytest.mark.parametrize("uses_gpu", [True, False])
def test_measure_charges_the_command_its_gpu_share(fake_nvml, tmp_path, capsys, uses_gpu):
    procs = tmp_path / "procs"
    procs.mkdir()
    (procs / str(OTHER)).write_text("50 0")  # a process that died without saying so: ignored
    fake_nvml.configure([gpu(0, processes_dir=str(procs))], clock=time.time, t0=time.time())
    code = "import time; time.sleep(1.0)" if not uses_gpu else USER
    args = ["-c", code] if not uses_gpu else ["-c", USER, str(procs), "60", "1.0"]
    run_id, fp = measure(capsys, *args)
    gpu_e = fp["components"]["gpu"]
    whole_j = 200.0 * fp["duration_s"]
    if uses_gpu:
        assert 0 < gpu_e["energy_j"] <= whole_j * 1.01
        assert fp["gpu_embodied_g"] > 0
    else:
        assert gpu_e["energy_j"] == 0.0 and fp["gpu_embodied_g"] == 0.0
        assert "ran nothing on it" in gpu_e["detail"]
    assert gpu_e["method"] == "measured: nvml, share by SM utilisation"

    assert main(["show", run_id]) == 0
    shown = capsys.readouterr().out
    assert "embodied (server)" in shown and "embodied (GPU)" in shown
    assert "gpu: all 1 GPU(s); GPU 0 NVIDIA H100" in shown

    assert main(["export", "--format", "csv", run_id]) == 0
    row = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert float(row["gpu_embodied_emissions"]) == pytest.approx(fp["gpu_embodied_g"] / 1000)
    assert row["gpu_method"] == gpu_e["method"]
