"""GPU energy attribution: `lowcarb measure -- CMD` in real subprocesses against a scripted NVML.

The GPU is tests/measure/fake_nvml/pynvml.py, put first on the PYTHONPATH of the `lowcarb measure`
subprocess (its script, a JSON file, named by FAKE_NVML_SCRIPT): one H100 drawing a constant
200 W, with an energy counter and per-process SM samples. Processes "use" it by writing their pid
and SM % into the GPU's process folder (the fake lists the live ones as compute processes and
returns one SM sample each per query), so the product code runs unchanged: the real `lowcarb`
command, the real process tree, the real NVML calls answered by the script.

Scenarios (each tracked command lasts --seconds):
  A  another process computes on the GPU (SM 80 %); the tracked command runs nothing on it
  B  the tracked command alone on the GPU (SM 80 %)
  C  both on it with equal SM utilisation
Share = GPU energy charged to the tracked command / the GPU's energy over the window
(200 W x window duration).

Claims: gpu.attribution_idle_share (A, target <= 0.05), gpu.attribution_sole_user_share (B,
target >= 0.9); reported: gpu.attribution_two_users_share (C).

    PYTHONPATH=src python benchmarks/gpu_attribution.py [--seconds 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_load_arguments,
    check_quiet_machine_for,
    claim,
    median,
    reported,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
FAKE_NVML = ROOT / "tests" / "measure" / "fake_nvml"
POWER_W = 200.0
SM_PERCENT = 80

# A process that uses the GPU for `seconds`: its pid file in the GPU's process folder holds its
# SM %, its start and, once it stops, its end (unix seconds); "none" runs the same time without
# touching the GPU.
GPU_USER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    folder, sm, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])

    def publish(text):
        tmp = folder / f".{os.getpid()}"
        tmp.write_text(text)
        tmp.rename(folder / str(os.getpid()))  # atomic: the fake never reads half a file

    start = time.time()
    if sm != "none":
        publish(f"{sm} {start}")
    try:
        time.sleep(seconds)
    finally:
        if sm != "none":
            publish(f"{sm} {start} {time.time()}")
    """
)


def lowcarb_cmd() -> list[str]:
    script = Path(sys.executable).parent / "lowcarb"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lowcarb.cli"]


def start_other(user: Path, procs: Path) -> subprocess.Popen:
    """Another user's process on the GPU, running until stopped; returns once it is listed."""
    other = subprocess.Popen([sys.executable, str(user), str(procs), str(SM_PERCENT), "3600"])
    deadline = time.monotonic() + 30
    while not (procs / str(other.pid)).exists():
        if time.monotonic() > deadline or other.poll() is not None:
            other.kill()
            raise SystemExit("the other GPU process did not start")
        time.sleep(0.01)
    return other


def run_scenario(name: str, tmp: Path, seconds: float, interval_s: float) -> dict:
    procs = tmp / f"procs-{name}-{time.monotonic_ns()}"
    procs.mkdir()
    script = tmp / f"nvml-{name}.json"
    spec = {
        "uuid": "GPU-3f2c9a1e-5b7d-4c8e-9a0b-1c2d3e4f5a6b",
        "name": "NVIDIA H100 80GB HBM3",
        "bus_id": "00000000:1B:00.0",
        "power_w": POWER_W,
        "counter": True,
        "utilization": "info",
        "processes_dir": str(procs),
    }
    script.write_text(json.dumps({"t0": time.time(), "gpus": [spec]}))
    user = tmp / "gpu_user.py"
    user.write_text(GPU_USER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(FAKE_NVML), str(ROOT / "src")]),
        "FAKE_NVML_SCRIPT": str(script),
        "LOWCARB_HOME": str(tmp / "home"),
        "LOWCARB_SAMPLE_INTERVAL_S": str(interval_s),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    tracked_sm = "none" if name == "A" else str(SM_PERCENT)
    other = start_other(user, procs) if name in ("A", "C") else None
    try:
        cmd = [*lowcarb_cmd(), "measure", "--json", "--name", f"gpu-{name}", "--",
               sys.executable, str(user), str(procs), tracked_sm, str(seconds)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    finally:
        if other is not None:
            other.terminate()
            other.wait()
    if done.returncode != 0:
        raise SystemExit(f"scenario {name}: lowcarb measure failed:\n{done.stderr}")
    fp = json.loads(done.stdout.strip().splitlines()[-1])["footprint"]
    gpu = fp["components"]["gpu"]
    gpu_j = POWER_W * fp["duration_s"]
    return {
        "scenario": name,
        "duration_s": fp["duration_s"],
        "gpu_energy_j": gpu_j,
        "charged_j": gpu["energy_j"],
        "share": gpu["energy_j"] / gpu_j,
        "method": gpu["method"],
        "detail": gpu["detail"],
        "incomplete": gpu.get("incomplete", ""),
        "gpu_embodied_g": fp.get("gpu_embodied_g"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each tracked command")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--interval", type=float, default=1.0, help="ledger sampling interval, s")
    add_load_arguments(ap)
    args = ap.parse_args()
    load = check_quiet_machine_for(args)
    runs: dict[str, list[dict]] = {"A": [], "B": [], "C": []}
    with tempfile.TemporaryDirectory(prefix="lowcarb-gpu-attr-") as d:
        for r in range(args.repeats):
            for name in runs:
                res = run_scenario(name, Path(d), args.seconds, args.interval)
                runs[name].append(res)
                print(f"repeat {r + 1} scenario {name}: share {res['share']:.4f} "
                      f"({res['charged_j']:.1f} of {res['gpu_energy_j']:.1f} J)", flush=True)
    shares = {k: median([x["share"] for x in v]) for k, v in runs.items()}
    figures = {
        "gpu": f"scripted NVML: one H100 at a constant {POWER_W:g} W, energy counter, SM samples",
        "tracked_command_s": args.seconds,
        "sample_interval_s": args.interval,
        "repeats": args.repeats,
        "median_share": shares,
        "runs": runs,
    }
    claims = [
        claim("gpu.attribution_idle_share", shares["A"], "<=", 0.05),
        claim("gpu.attribution_sole_user_share", shares["B"], ">=", 0.9),
        reported("gpu.attribution_two_users_share", shares["C"]),
    ]
    path = write_results("gpu_attribution", figures, claims, load=load, args=args)
    print(f"wrote {path}")
    for c in claims:
        print(f"  {c['id']}: {c['value']:.4f} target {c['target']} met {c['met']}")


if __name__ == "__main__":
    main()
