"""What the meters read at every tick: the clock, the tracked process tree, the whole machine.

The tracked tree is a root process and all its descendants (psutil). Its CPU time is the sum over
live members of user + system + children_user + children_system: a child that exited and was
waited for moves its time into its parent's children_* fields, so each process is counted once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psutil


@dataclass(frozen=True)
class Tick:
    t_s: float  # monotonic clock, seconds
    tree_cpu_s: float  # cumulative CPU seconds of the tracked process tree
    machine_cpu_s: float  # cumulative busy CPU seconds of the whole machine, all CPUs
    rss_bytes: float  # resident memory of the tracked tree now
    tree_pids: frozenset[int] = frozenset()  # the tree's members now (GPU attribution by pid)


class Probes(Protocol):
    def tick(self) -> Tick: ...


def machine_busy_cpu_s() -> float:
    """Busy CPU seconds of the machine since boot, summed over CPUs (idle, iowait, steal excluded)."""
    t = psutil.cpu_times()
    busy = t.user + t.system + getattr(t, "nice", 0.0)
    busy += getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    # Linux counts guest time inside user time already; subtract nothing, add nothing.
    return float(busy)


def _has_proc_children() -> bool:
    pid = os.getpid()
    return os.path.exists(f"/proc/{pid}/task/{pid}/children")


# Linux lists each task's children in /proc/PID/task/TID/children: walking those files costs a few
# reads per tree member, where psutil's children() scans every process on the machine (about 2 ms
# of CPU per tick with a hundred processes). Elsewhere psutil is the fallback.
_PROC_CHILDREN = _has_proc_children()


def _tree_pids_linux(root: int) -> list[int] | None:
    """The root and its descendants, from /proc/*/task/*/children; None if unreadable."""
    pids: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue  # exited since its parent listed it
        except OSError:
            return None
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    todo.extend(int(x) for x in fh.read().split())
            except FileNotFoundError:
                continue  # the thread ended
            except OSError:
                return None
    return pids


class ProcessTree:
    """CPU time and resident memory of a process and its descendants."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = os.getpid() if pid is None else pid
        try:
            self._root: psutil.Process | None = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            raise ValueError(f"no process with pid {self.pid} to track") from None
        self._cache: dict[int, psutil.Process] = {}
        self._last_cpu_s = 0.0
        self._last_rss = 0.0
        self._final_cpu_s: float | None = None
        self._lock = threading.Lock()
        self.last_pids: frozenset[int] = frozenset({self.pid})  # members at the last read()

    def _members(self) -> list[psutil.Process]:
        if self._root is None:
            return []
        pids = _tree_pids_linux(self.pid) if _PROC_CHILDREN else None
        if pids is None:
            try:
                return [self._root, *self._root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return []
        members = []
        cache: dict[int, psutil.Process] = {}
        for pid in pids:
            proc = self._cache.get(pid) or (self._root if pid == self.pid else None)
            if proc is None:
                try:
                    proc = psutil.Process(pid)
                except psutil.NoSuchProcess:
                    continue
            cache[pid] = proc
            members.append(proc)
        self._cache = cache
        return members

    def read(self) -> tuple[float, float]:
        """(cumulative CPU seconds, resident bytes); CPU seconds never decrease."""
        cpu_s = 0.0
        rss = 0.0
        members = self._members()
        self.last_pids = frozenset(p.pid for p in members) | {self.pid}
        for p in members:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    cpu_s += t.user + t.system + t.children_user + t.children_system
                    rss += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        with self._lock:
            if self._final_cpu_s is not None:
                cpu_s = self._final_cpu_s
                # The tree was resident until it exited, just before this reading: its last
                # measured size stands for the final interval (0 would count that interval half).
                rss = self._last_rss
            else:
                self._last_rss = rss
            # A member that vanished without being waited for by the tree takes its time with it;
            # keep the running maximum so that a window never sees negative CPU time.
            self._last_cpu_s = max(self._last_cpu_s, cpu_s)
            return self._last_cpu_s, rss

    def set_final_cpu_s(self, cpu_s: float) -> None:
        """The root has exited and was reaped: its rusage (all waited descendants included)."""
        with self._lock:
            self._final_cpu_s = max(cpu_s, self._last_cpu_s)


class SystemProbes:
    """Probes on the real machine. `from_birth`: the root was just started, count its CPU from 0."""

    def __init__(
        self,
        pid: int | None = None,
        *,
        from_birth: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tree = ProcessTree(pid)
        self._clock = clock
        self._from_birth = from_birth
        self._first = True

    def tick(self) -> Tick:
        cpu_s, rss = self.tree.read()
        if self._first and self._from_birth:
            cpu_s = 0.0
        self._first = False
        return Tick(self._clock(), cpu_s, machine_busy_cpu_s(), rss, self.tree.last_pids)
