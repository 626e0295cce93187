"""The tracked process tree's share of one GPU over one sampling interval.

NVML has no per-process energy. Each interval's GPU energy is split as follows (the README's
"How lowcarb measures" states the same policy):

- `sm`: the driver returned per-process SM-utilisation samples with some activity: the tree gets
  the sum of its processes' SM utilisation over the sum of every process's. The GPU's idle power
  during that interval is thereby shared in proportion to activity.
- `idle`: the driver gives samples but no process was active: the energy (idle power) is shared
  equally among the processes holding a context on the GPU (its compute processes).
- `processes`: the driver gives no per-process samples at all (older GPUs, some vGPU set-ups): the
  same equal split among the compute processes, whatever their activity.
- `mig`: a GPU in MIG mode (no per-process samples there): each instance owns the fraction of the
  GPU's energy its memory is of the GPU's memory (a proxy for its slices), shared equally among the
  compute processes on that instance.
- `unheld`: no process held a context: nobody is charged (the GPU idled for no one).

A tree with no process on the GPU therefore gets 0 in every case.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

SM = "sm"
IDLE = "idle"
PROCESSES = "processes"
MIG = "mig"
UNHELD = "unheld"


def context_share(tree: Collection[int], holders: Collection[int]) -> float:
    """The tree's equal share among the processes holding a context (0 when none does)."""
    holders = set(holders)
    return len(holders & set(tree)) / len(holders) if holders else 0.0


def interval_share(
    tree: Collection[int],
    sm_by_pid: Mapping[int, float] | None,
    holders: Collection[int],
) -> tuple[float, str]:
    """(share in [0, 1], how) for a GPU not in MIG mode.

    sm_by_pid: SM utilisation summed over the interval's samples per pid, or None when the driver
    gives no per-process samples. holders: pids of the GPU's compute processes.
    """
    tree = set(tree)
    if sm_by_pid is not None:
        total = sum(v for v in sm_by_pid.values() if v > 0)
        if total > 0:
            mine = sum(v for pid, v in sm_by_pid.items() if pid in tree and v > 0)
            return mine / total, SM
    if not holders:
        return 0.0, UNHELD
    return context_share(tree, holders), IDLE if sm_by_pid is not None else PROCESSES


def mig_share(
    tree: Collection[int], instances: Sequence[tuple[float, Collection[int]]]
) -> tuple[float, str]:
    """(share, how) for a GPU in MIG mode; instances: (fraction of the GPU, holder pids) each."""
    if not any(holders for _, holders in instances):
        return 0.0, UNHELD
    share = sum(fraction * context_share(tree, holders) for fraction, holders in instances)
    return min(1.0, share), MIG
