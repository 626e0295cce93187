"""Scripted probes and clocks shared by the ledger tests."""

from __future__ import annotations

from collections.abc import Callable

from lowcarb.measure.probes import Tick


class ScriptedProbes:
    """Ticks from scripted functions of a fake clock that advances `step_s` per tick."""

    def __init__(
        self,
        *,
        step_s: float = 1.0,
        tree_cpu_s: Callable[[float], float] = lambda t: 0.0,
        machine_cpu_s: Callable[[float], float] = lambda t: 0.0,
        rss_bytes: Callable[[float], float] = lambda t: 0.0,
        tree_pids: frozenset[int] = frozenset(),
    ) -> None:
        self.t = 0.0
        self.step_s = step_s
        self.tree_cpu_s = tree_cpu_s
        self.machine_cpu_s = machine_cpu_s
        self.rss_bytes = rss_bytes
        self.tree_pids = frozenset(tree_pids)
        self.ticks = 0

    def tick(self) -> Tick:
        tick = Tick(
            self.t,
            self.tree_cpu_s(self.t),
            self.machine_cpu_s(self.t),
            self.rss_bytes(self.t),
            self.tree_pids,
        )
        self.t += self.step_s
        self.ticks += 1
        return tick


def tick(
    t: float,
    tree: float = 0.0,
    machine: float = 0.0,
    rss: float = 0.0,
    pids: frozenset[int] | set[int] = frozenset(),
) -> Tick:
    return Tick(t, tree, machine, rss, frozenset(pids))
