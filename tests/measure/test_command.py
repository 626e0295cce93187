"""measure_command: exit codes, the whole process tree (children and grandchildren), errors."""

from __future__ import annotations

import sys

import pytest

from lowcarb.measure import CarbonConfig
from lowcarb.measure.command import measure_command

BURN = "import time\nt=time.process_time()\nwhile time.process_time()-t<{s}: pass\n"


@pytest.fixture
def config(tmp_path):
    return CarbonConfig(powercap_root=str(tmp_path), sample_interval_s=0.1)


def test_exit_code_and_children_cpu_time(config):
    # the child burns 0.2 s itself and runs a grandchild that burns 0.3 s, then exits with 7
    code = (
        "import subprocess, sys\n"
        + BURN.format(s=0.2)
        + f"subprocess.run([sys.executable, '-c', {BURN.format(s=0.3)!r}])\n"
        + "sys.exit(7)\n"
    )
    exit_code, fp = measure_command([sys.executable, "-c", code], config=config, unit="job", units=1)
    assert exit_code == 7
    assert fp.cpu_time_s >= 0.5  # the grandchild's CPU time is included
    assert fp.components["cpu"].energy_j == pytest.approx(fp.cpu_time_s * 4.0)
    assert fp.g_per_unit == pytest.approx(fp.total_g)


def test_killed_by_signal_maps_to_128_plus_n(config):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    exit_code, _ = measure_command([sys.executable, "-c", code], config=config)
    assert exit_code == 128 + 15


def test_missing_command(config):
    with pytest.raises(ValueError, match="no command given"):
        measure_command([], config=config)
    with pytest.raises(ValueError, match="not on PATH"):
        measure_command(["lowcarb-no-such-program"], config=config)
    with pytest.raises(ValueError, match="does not exist"):
        measure_command(["./no/such/file"], config=config)


def test_idle_baseline_is_taken_before_the_command_starts(config, monkeypatch):
    import subprocess

    import lowcarb.measure.command as command

    events: list[str] = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(command, "prepare_idle_baseline", lambda root, idle_w: events.append(f"idle {root}"))
    def popen(argv, **kwargs):
        events.append("start")
        return real_popen(argv, **kwargs)

    monkeypatch.setattr(command.subprocess, "Popen", popen)
    exit_code, _ = measure_command([sys.executable, "-c", "pass"], config=config)
    assert exit_code == 0 and events == [f"idle {config.powercap_root}", "start"]


def test_windows_of_the_command_are_nested_in_its_window(config, tmp_path):
    """The command's own ledger windows name the measuring window as parent: never counted twice."""
    import json

    out = tmp_path / "out.json"
    code = (
        "import json, os\n"
        "from lowcarb.measure import CarbonConfig, track\n"
        f"config = CarbonConfig(powercap_root={str(tmp_path)!r})\n"
        "with track('inside', config=config) as fp:\n"
        "    pass\n"
        f"open({str(out)!r}, 'w').write(json.dumps([fp.parent, os.environ['EXTRA']]))\n"
    )
    _, fp = measure_command([sys.executable, "-c", code], config=config, env={"EXTRA": "x"})
    assert json.loads(out.read_text()) == [fp.id, "x"]
