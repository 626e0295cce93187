"""A process of a job for the store tests (run as a script, not collected by pytest).

usage: python _job_worker.py NAME [spawn]
Opens `lowcarb.track(NAME)` (the store from LOWCARB_STORE, the job from LOWCARB_JOB), a nested
window inside it, and with `spawn` runs a child process that opens a window of its own inside
the outer one. Prints the outer window's id.
"""

import subprocess
import sys

import lowcarb
from lowcarb.measure import CarbonConfig

config = CarbonConfig(intensity_g_per_kwh=100.0, powercap_root="/nonexistent", sample_interval_s=0.05)
name = sys.argv[1]
with lowcarb.track(name, config=config) as outer:
    sum(range(200_000))
    with lowcarb.track(f"{name} inner", config=config):
        sum(range(100_000))
    if len(sys.argv) > 2 and sys.argv[2] == "spawn":
        code = (
            "import lowcarb\n"
            "from lowcarb.measure import CarbonConfig\n"
            "c = CarbonConfig(intensity_g_per_kwh=100.0, powercap_root='/nonexistent')\n"
            f"with lowcarb.track({name + ' child'!r}, config=c):\n"
            "    sum(range(100_000))\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
print(outer.id, flush=True)
