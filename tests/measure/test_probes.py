"""The process tree: children found by /proc children files and by psutil alike; CPU never drops."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lowcarb.measure import probes as probes_mod
from lowcarb.measure.probes import ProcessTree, SystemProbes


@pytest.fixture
def grandchild():
    code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])"
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    tree = ProcessTree()
    while len(tree._members()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield child
    for p in ProcessTree(child.pid)._members()[::-1]:
        p.kill()
    child.wait()


def test_both_ways_of_listing_the_tree_agree(grandchild, monkeypatch):
    fast = {p.pid for p in ProcessTree()._members()}
    monkeypatch.setattr(probes_mod, "_PROC_CHILDREN", False)
    slow = {p.pid for p in ProcessTree()._members()}
    assert len(fast) >= 3 and grandchild.pid in fast
    assert fast == slow


def test_cpu_time_is_monotone_and_final_rusage_wins():
    tree = ProcessTree()
    a, rss = tree.read()
    sum(range(300_000))
    b, _ = tree.read()
    assert b >= a and rss > 0
    last_rss = tree.read()[1]
    tree.set_final_cpu_s(b + 5.0)
    assert tree.read()[0] == pytest.approx(b + 5.0)
    # The root exited just before the final reading: its last size stands for the final interval
    # (0 here made the RAM estimate count that interval half).
    assert tree.read()[1] == last_rss > 0


def test_from_birth_starts_at_zero_and_bad_pid():
    p = SystemProbes(from_birth=True)
    assert p.tick().tree_cpu_s == 0.0
    assert p.tick().tree_cpu_s > 0.0  # this test process has used CPU already
    with pytest.raises(ValueError, match="no process with pid"):
        ProcessTree(2**22 + 12345)
