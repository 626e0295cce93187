"""Measure a command: run it, track its whole process tree, return its exit code and footprint."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence

from lowcarb.errors import ConfigError
from lowcarb.measure.config import CarbonConfig, load_carbon_config
from lowcarb.measure.footprint import Footprint
from lowcarb.measure.probes import SystemProbes
from lowcarb.measure.rapl import prepare_idle_baseline
from lowcarb.measure.tracker import PARENT_WINDOW_ENV, Window, new_window_id


def check_command(argv: Sequence[str]) -> None:
    """Raise ValueError when `argv` is empty or names a program that cannot be run."""
    if not argv:
        raise ConfigError("no command given: write it after --, e.g. lowcarb measure -- python train.py")
    prog = argv[0]
    if os.sep in prog:
        if not os.path.isfile(prog):
            raise ConfigError(f"command not found: {prog!r} does not exist")
        if not os.access(prog, os.X_OK):
            raise ConfigError(f"command {prog!r} is not executable (chmod +x it, or name its interpreter)")
    elif shutil.which(prog) is None:
        raise ConfigError(f"command not found: {prog!r} is not on PATH; check the name or give a path")


def exit_code_of(status: int) -> int:
    """The shell's convention: the exit status, or 128 + N when killed by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def measure_command(
    argv: Sequence[str],
    *,
    name: str | None = None,
    unit: str | None = None,
    units: float | None = None,
    config: CarbonConfig | None = None,
    on_close: Callable[[Footprint], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int, Footprint]:
    """Run `argv` inside a ledger window over its process tree; (exit code, footprint).

    `env` adds variables to the command's environment. The command also gets
    LOWCARB_PARENT_WINDOW, so windows it opens itself are nested in this one, not counted twice.

    The child's CPU time comes from its rusage when it is reaped (os.wait4), which includes every
    descendant it waited for, so short-lived children between samples are counted too.
    Ctrl-C reaches the child (same process group); we wait for it, close the window, re-raise.
    """
    check_command(argv)
    config = config if config is not None else load_carbon_config()
    # The package's idle power is measured while the machine is still quiet: before the command.
    prepare_idle_baseline(config.powercap_root, config.rapl_idle_w)
    window_id = new_window_id()
    child_env = {**os.environ, **(env or {}), PARENT_WINDOW_ENV: window_id}
    try:
        proc = subprocess.Popen(list(argv), env=child_env)
    except OSError as exc:
        raise ConfigError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    probes = SystemProbes(proc.pid, from_birth=True)
    window = Window(
        name or os.path.basename(argv[0]),
        unit=unit,
        units=units,
        config=config,
        pid=proc.pid,
        on_close=on_close,
        probes=probes,
        window_id=window_id,
    )
    interrupted: KeyboardInterrupt | None = None
    with window as fp:
        while True:
            try:
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            except KeyboardInterrupt as exc:
                # The terminal sent SIGINT to the child too (same process group): let it finish
                # its own clean-up, reap it, and record the window before re-raising. A SIGTERM
                # or SIGHUP sent to lowcarb alone (`kill`, docker stop; lowcarb.interrupts raises
                # it with its number) is passed on, or the child would run on unaware.
                signum = getattr(exc, "signum", None)
                if signum is not None and interrupted is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signum)
                interrupted = interrupted or exc
        proc.returncode = exit_code_of(status)
        probes.tree.set_final_cpu_s(rusage.ru_utime + rusage.ru_stime)
        if interrupted is not None:
            raise interrupted
    return proc.returncode, fp
