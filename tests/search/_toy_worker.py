"""One search worker process on the toy problem, for the distributed tests.

    python tests/search/_toy_worker.py --storage URL --study NAME --run-dir DIR --n-trials 8
        [--sleep-s 0.5] [--marker-dir DIR] [--barrier FILE]

--marker-dir: a file `started-<trial>-<pid>` is written when a trial starts (the kill -9 test
waits for one). --barrier: wait until this file exists before running trials (both workers start
together).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _toy import toy_config, toy_trial  # noqa: E402

from lowcarb.search.hpo import run_search  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--storage", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--n-trials", type=int, default=8)
    ap.add_argument("--sleep-s", type=float, default=0.5)
    ap.add_argument("--marker-dir")
    ap.add_argument("--barrier")
    args = ap.parse_args()

    inner = toy_trial(sleep_s=args.sleep_s)

    def trial(ctx):
        if args.marker_dir:
            Path(args.marker_dir, f"started-{ctx.number}-{os.getpid()}").touch()
        return inner(ctx)

    if args.barrier:
        Path(args.barrier + f".ready-{os.getpid()}").touch()
        deadline = time.monotonic() + 60
        while not Path(args.barrier).exists():
            if time.monotonic() > deadline:
                print("barrier never opened", file=sys.stderr)
                return 3
            time.sleep(0.05)
    result = run_search(
        trial,
        toy_config(n_trials=args.n_trials),
        run_dir=args.run_dir,
        storage=args.storage,
        study_name=args.study,
    )
    print(result.counts())
    return 0


if __name__ == "__main__":
    sys.exit(main())
