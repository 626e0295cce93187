"""A writer process for the durability tests (run as a script, not collected by pytest).

usage: python _writer.py STORE RUN_ID N [hang]
Writes N closed windows into RUN_ID, prints "closed N", then (with `hang`) opens one more window
and prints "open" and sleeps inside it until killed.
"""

import sys
import time

from lowcarb.measure import CarbonConfig, track
from lowcarb.store import RunStore

store = RunStore(sys.argv[1])
run_id = sys.argv[2]
n = int(sys.argv[3])
config = CarbonConfig(intensity_g_per_kwh=100.0, powercap_root="/nonexistent", sample_interval_s=0.05)


def save(fp):
    store.add_footprint(run_id, fp)


for i in range(n):
    with track(f"w{i}", config=config, on_close=save):
        pass
print(f"closed {n}", flush=True)
if len(sys.argv) > 4 and sys.argv[4] == "hang":
    with track("never closed", config=config, on_close=save):
        print("open", flush=True)
        time.sleep(600)
