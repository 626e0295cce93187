"""Ledger overhead: a CPU-bound PyTorch workload untracked, tracked by lowcarb, tracked by CodeCarbon.

Claims:
- `ledger.overhead_pct` (target <= 1.0): wall-time overhead of `lowcarb.track` (1 s sampling,
  footprint saved to the SQLite run store) over the same workload untracked, medians of 3 runs.
- `ledger.postgres_overhead_pct` (target <= 1.0): the same with the run store on PostgreSQL
  (LOWCARB_STORE=postgresql://..., schema `lowcarb_bench`): needs a server, e.g. run the script
  under `bash .ci/postgres.sh ...` (it reads LOWCARB_TEST_POSTGRES_URL) or pass --postgres-url.
- `ledger.export_codecarbon_columns_match` (target == true): the first columns of
  `lowcarb export --format csv` are exactly the header the REAL CodeCarbon writes to its
  emissions.csv (both run in the CodeCarbon venv below, lowcarb from this checkout's src/).

    bash .ci/postgres.sh .venv/bin/python benchmarks/ledger_overhead.py [--repeats 3] [--target-s 40]

How it runs:
- Every measured run is a fresh worker process (`--worker ARM`) running the same fixed amount of
  work (a 3-layer MLP trained on fixed random data; the iteration count is calibrated once to take
  about --target-s seconds). torch is pinned to ONE thread in every worker and the workload is
  timed inside the worker, from just before the tracker starts to just after it stops (the
  lowcarb arm includes writing the footprint to the SQLite store).
- Arms alternate round by round (the order rotates each round), so the other work on this shared
  machine loads every arm alike. Medians of --repeats runs per arm.
- CodeCarbon (its OfflineEmissionsTracker, 1 s power measurement, country FRA, output to a temp
  folder) runs in its own virtual environment, benchmarks/.venv-codecarbon (ignored by git),
  created with (torch first, so that codecarbon pulls no other torch):
      python3.11 -m venv benchmarks/.venv-codecarbon
      benchmarks/.venv-codecarbon/bin/pip install torch==2.13.0
      benchmarks/.venv-codecarbon/bin/pip install codecarbon==3.3.2 matplotlib
  (matplotlib: `python -m lowcarb` imports its report module; codecarbon pulls the rest.)
  This script starts that venv's python for the CodeCarbon worker (the workload code is this same
  file) and for the header check, with PYTHONPATH=src for lowcarb; without the venv the CodeCarbon
  figures are null and the reason is recorded.
- Also measured: the sampler's own cost per tick (probes + meters), in this process, which bounds
  the overhead independently of the machine's noise: cost per tick / sampling interval.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODECARBON_PY = ROOT / "benchmarks" / ".venv-codecarbon" / "bin" / "python"
ARMS = ("untracked", "lowcarb", "lowcarb-postgres", "codecarbon")
BENCH_SCHEMA = "lowcarb_bench"


def workload(iters: int) -> float:
    """Train a 512-1024-1024-10 MLP on fixed random data for `iters` steps; returns the last loss."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(128, 512)
    y = torch.randint(0, 10, (128,))
    loss = torch.tensor(0.0)
    for _ in range(iters):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return float(loss.detach())


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_worker(arm: str, iters: int, out_dir: str) -> dict:
    import torch

    torch.set_num_threads(1)
    workload(2)  # warm-up: first-call allocations are not part of any arm
    extra: dict = {}
    if arm == "untracked":
        t0, c0 = time.perf_counter(), _cpu_s()
        workload(iters)
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    elif arm in ("lowcarb", "lowcarb-postgres"):
        os.environ["LOWCARB_HOME"] = out_dir
        if arm == "lowcarb":
            os.environ.pop("LOWCARB_STORE", None)  # the SQLite store in out_dir
        import lowcarb

        config = lowcarb.load_carbon_config(sample_interval_s=1.0)
        t0, c0 = time.perf_counter(), _cpu_s()
        with lowcarb.track("overhead workload", config=config, unit="step", units=iters) as fp:
            workload(iters)
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
        extra = {"energy_j": fp.energy_j, "methods": fp.methods, "total_g": fp.total_g}
    elif arm == "codecarbon":
        import logging

        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        t0, c0 = time.perf_counter(), _cpu_s()
        tracker = OfflineEmissionsTracker(
            country_iso_code="FRA", measure_power_secs=1, output_dir=out_dir, log_level="error"
        )
        tracker.start()
        workload(iters)
        emissions_kg = tracker.stop()
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
        data = tracker.final_emissions_data
        extra = {
            "emissions_kg": emissions_kg,
            "energy_kwh": getattr(data, "energy_consumed", None),
            "codecarbon_version": __import__("codecarbon").__version__,
        }
    else:
        raise ValueError(f"unknown arm {arm!r}; choose one of {ARMS}")
    return {"arm": arm, "wall_s": wall, "cpu_s": cpu, **extra}


def spawn(arm: str, iters: int, postgres_url: str | None = None) -> dict:
    python = str(CODECARBON_PY) if arm == "codecarbon" else sys.executable
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if arm == "lowcarb-postgres" and postgres_url:
        env["LOWCARB_STORE"] = postgres_url
    with tempfile.TemporaryDirectory(prefix=f"ledger-{arm}-") as tmp:
        proc = subprocess.run(
            [python, __file__, "--worker", arm, "--iters", str(iters), "--out-dir", tmp],
            capture_output=True,
            text=True,
            env=env,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{arm} worker failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def codecarbon_available() -> str | None:
    """None when the CodeCarbon venv works, else why not."""
    if not CODECARBON_PY.exists():
        return f"{CODECARBON_PY} not found (see this script's docstring to create it)"
    proc = subprocess.run(
        [str(CODECARBON_PY), "-c", "import codecarbon, torch"], capture_output=True, text=True
    )
    return None if proc.returncode == 0 else f"cannot import codecarbon: {proc.stderr[-300:]}"


def postgres_store(url: str | None) -> tuple[str | None, str | None]:
    """(the bench store's URL in its own schema, None) or (None, why there is none)."""
    if not url:
        return None, "no PostgreSQL server: set LOWCARB_TEST_POSTGRES_URL or --postgres-url"
    import urllib.parse

    try:
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {BENCH_SCHEMA}")
    except Exception as exc:  # noqa: BLE001 - recorded as the reason the arm did not run
        return None, f"cannot use {url}: {exc}"
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=" + urllib.parse.quote(f"-csearch_path={BENCH_SCHEMA}"), None


def codecarbon_header() -> list[str]:
    """The header of the emissions.csv the real CodeCarbon writes (in its venv)."""
    code = (
        "import logging, sys, time\n"
        "from codecarbon import OfflineEmissionsTracker\n"
        "logging.getLogger('codecarbon').setLevel(logging.ERROR)\n"
        "t = OfflineEmissionsTracker(country_iso_code='FRA', measure_power_secs=1,\n"
        "    output_dir=sys.argv[1], log_level='error')\n"
        "t.start(); time.sleep(1.5); sum(range(10**6)); t.stop()\n"
    )
    with tempfile.TemporaryDirectory(prefix="ledger-cc-header-") as tmp:
        subprocess.run([str(CODECARBON_PY), "-c", code, tmp], check=True, capture_output=True)
        return (Path(tmp) / "emissions.csv").read_text().splitlines()[0].split(",")


def lowcarb_header() -> list[str]:
    """The header of `lowcarb export --format csv` after a `lowcarb measure`, run in the same
    venv as CodeCarbon with this checkout's src/ on the path."""
    with tempfile.TemporaryDirectory(prefix="ledger-lc-header-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "LOWCARB_HOME": tmp}
        env.pop("LOWCARB_STORE", None)
        lowcarb = [str(CODECARBON_PY), "-m", "lowcarb"]
        subprocess.run([*lowcarb, "measure", "--", sys.executable, "-c", "pass"], check=True,
                       capture_output=True, env=env)
        out = subprocess.run([*lowcarb, "export", "--format", "csv"], check=True,
                             capture_output=True, text=True, env=env).stdout
        return out.splitlines()[0].split(",")


def header_check(cc_reason: str | None) -> dict:
    if cc_reason is not None:
        return {"match": None, "reason": cc_reason}
    cc, ours = codecarbon_header(), lowcarb_header()
    return {
        "match": ours[: len(cc)] == cc,
        "codecarbon_columns": cc,
        "lowcarb_first_columns": ours[: len(cc)],
        "lowcarb_extra_columns": ours[len(cc):],
    }


def calibrate(target_s: float) -> tuple[int, float]:
    """Iterations for about target_s seconds (one thread), timed in this process."""
    import torch

    torch.set_num_threads(1)
    workload(2)
    n = 20
    t0 = time.perf_counter()
    workload(n)
    per_iter = (time.perf_counter() - t0) / n
    return max(50, int(target_s / per_iter)), per_iter


def tick_cost_ms(n: int = 200) -> tuple[float, float]:
    """Median cost of one sampler tick (process-tree probes + the meters): (CPU ms, wall ms).

    CPU time is what the sampler takes from the workload; wall time also counts waiting for a
    core on this busy machine.
    """
    from lowcarb.measure import CarbonConfig
    from lowcarb.measure.probes import SystemProbes
    from lowcarb.measure.tracker import select_meters

    probes = SystemProbes()
    meters = select_meters(CarbonConfig())
    first = probes.tick()
    for m in meters:
        m.start(first)
    cpu_ms, wall_ms = [], []
    for _ in range(n):
        c0, t0 = time.thread_time(), time.perf_counter()
        tick = probes.tick()
        for m in meters:
            m.sample(tick)
        cpu_ms.append((time.thread_time() - c0) * 1000)
        wall_ms.append((time.perf_counter() - t0) * 1000)
    return statistics.median(cpu_ms), statistics.median(wall_ms)


def run_rounds(arms: list[str], iters: int, repeats: int, pg_url: str | None) -> dict[str, list[dict]]:
    """Every arm `repeats` times, the order rotating each round (no arm always goes first)."""
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    for r in range(repeats):
        for arm in arms[r % len(arms) :] + arms[: r % len(arms)]:
            res = spawn(arm, iters, pg_url)
            runs[arm].append(res)
            print(f"round {r + 1} {arm}: {res['wall_s']:.2f} s wall, {res['cpu_s']:.2f} s CPU", flush=True)
    return runs


def arm_figures(runs: dict[str, list[dict]], median: Callable[[list[float]], float]) -> dict:
    """Medians and overheads (%) of every tracked arm over the untracked one."""

    def med(arm: str, key: str) -> float | None:
        return median([x[key] for x in runs[arm]]) if runs.get(arm) else None

    base = {key: med("untracked", key) for key in ("wall_s", "cpu_s")}

    def overhead(arm: str, key: str) -> float | None:
        m, b = med(arm, key), base[key]
        return None if m is None or not b else 100.0 * (m - b) / b

    def paired(arm: str) -> float | None:
        if not runs.get(arm):
            return None
        pairs = zip(runs[arm], runs["untracked"], strict=True)
        return median([100.0 * (a["wall_s"] - b["wall_s"]) / b["wall_s"] for a, b in pairs])

    out: dict = {"untracked_wall_s_median": base["wall_s"]}
    for arm, prefix in (("lowcarb", "lowcarb"), ("lowcarb-postgres", "postgres"), ("codecarbon", "codecarbon")):
        out[f"{prefix}_wall_s_median"] = med(arm, "wall_s")
        out[f"{prefix}_overhead_pct"] = overhead(arm, "wall_s")
        out[f"{prefix}_overhead_pct_paired_median"] = paired(arm)
        out[f"{prefix}_cpu_overhead_pct"] = overhead(arm, "cpu_s")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--target-s", type=float, default=40.0, help="workload length, s (30 to 60)")
    ap.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    ap.add_argument("--iters", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    ap.add_argument(
        "--postgres-url",
        default=os.environ.get("LOWCARB_TEST_POSTGRES_URL"),
        help="PostgreSQL server for the postgres arm (default: $LOWCARB_TEST_POSTGRES_URL)",
    )
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import (
        add_load_arguments,
        check_quiet_machine_for,
        claim,
        median,
        reported,
        write_results,
    )

    add_load_arguments(ap)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.iters, args.out_dir)))
        return 0
    load = check_quiet_machine_for(args)

    cc_reason = codecarbon_available()
    pg_url, pg_reason = postgres_store(args.postgres_url)
    skipped = {"codecarbon": cc_reason, "lowcarb-postgres": pg_reason}
    arms = [a for a in ARMS if skipped.get(a) is None]
    load_before = os.getloadavg()
    header = header_check(cc_reason)  # first: a broken venv fails in seconds, not after the rounds
    iters, per_iter = calibrate(args.target_s)
    print(f"workload: {iters} steps (~{iters * per_iter:.0f} s at calibration), arms {arms}", flush=True)
    runs = run_rounds(arms, iters, args.repeats, pg_url)
    tick_cpu_ms, tick_wall_ms = tick_cost_ms()
    figures = {
        "workload": "MLP 512-1024-1024-10, batch 128, SGD, fixed random data, torch threads 1",
        "iterations": iters,
        "repeats": args.repeats,
        "sample_interval_s": 1.0,
        "runs": runs,
        **arm_figures(runs, median),
        "postgres_unavailable_reason": pg_reason,
        "postgres_server": "throw-away server of .ci/postgres.sh (fsync off) when run through it",
        "export_header": header,
        "codecarbon_unavailable_reason": cc_reason,
        "sampler_tick_cpu_ms_median": tick_cpu_ms,
        "sampler_tick_wall_ms_median": tick_wall_ms,
        # CPU the sampler takes per second of workload at 1 s sampling, in percent
        "sampler_cpu_overhead_bound_pct": tick_cpu_ms / 1000.0 / 1.0 * 100.0,
        "load_average_before": load_before,
        "load_average_at_end": os.getloadavg(),
        "note": "run alone (nothing else heavy on the 2 cores); arms alternated round by round",
    }
    claims = [
        claim("ledger.overhead_pct", figures["lowcarb_overhead_pct"], "<=", 1.0),
        claim("ledger.postgres_overhead_pct", figures["postgres_overhead_pct"], "<=", 1.0),
        claim("ledger.export_codecarbon_columns_match", header["match"], "==", True),
        reported("ledger.codecarbon_overhead_pct", figures["codecarbon_overhead_pct"]),
    ]
    path = write_results("ledger_overhead", figures, claims, load=load, args=args)
    print(json.dumps({k: v for k, v in figures.items() if k != "runs"}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
