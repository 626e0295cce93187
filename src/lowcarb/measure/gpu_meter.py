"""GPU energy of the tracked process tree, interval by interval, through NVML.

Per GPU the energy comes from the total-energy counter (mJ, Volta and newer) where the GPU has
one, else from power samples integrated by the trapezoid rule. Each sampling interval's energy is
then shared with the tree as gpu_share.py says (SM-utilisation share, else compute processes), so
a job is charged its own part of a shared GPU and nothing for a GPU it did not use.

An NVML error never loses the window: a failed reading is skipped (the energy counter spans the
gap at the next good reading; power samples are interpolated across it) and energy that could not
be read at all is named in the figure's `incomplete` field with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil

from lowcarb.measure.footprint import ComponentEnergy
from lowcarb.measure.gpu_share import IDLE, MIG, PROCESSES, SM, UNHELD, interval_share, mig_share
from lowcarb.measure.gpu_visible import VisibleGpus, visible_gpus
from lowcarb.measure.nvml import NvmlSession, NvmlUnavailable, PhysicalGpu
from lowcarb.measure.probes import Tick

_HOW_WORDS = {
    SM: "SM utilisation",
    IDLE: "idle, shared by context",
    PROCESSES: "compute processes",
    MIG: "MIG instance x compute processes",
    UNHELD: "no context, charged to no one",
}


@dataclass(frozen=True)
class GpuUse:
    """What a window used of one GPU: its model and the tree's share x seconds (GPU-seconds)."""

    name: str
    uuid: str
    gpu_s: float


@dataclass
class _Account:
    """One GPU's readings and sums over a window."""

    gpu: PhysicalGpu
    counter: bool | None = None  # energy counter (True) or power samples (False); None: unknown
    last_t: float | None = None  # time of the last good reading; None: no baseline yet
    last_mj: int = 0
    last_w: float = 0.0
    since_us: int = 0  # newest per-process sample timestamp already counted
    energy_j: float = 0.0  # the whole GPU over the intervals read
    tree_j: float = 0.0
    tree_gpu_s: float = 0.0
    how_s: dict[str, float] = field(default_factory=dict)
    others: set[int] = field(default_factory=set)  # pids of other processes seen on the GPU
    foreign: set[int] = field(default_factory=set)  # of those, pids absent from this namespace
    errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


class NvmlMeter:
    """The Meter for NVIDIA GPUs; one per window, sharing the process's NvmlSession."""

    def __init__(self, session: NvmlSession, visible: VisibleGpus | None = None) -> None:
        self.session = session
        self.visible = visible if visible is not None else visible_gpus(session.gpus)
        if not self.visible.gpus:
            raise NvmlUnavailable(f"nvml: {self.visible.note}")
        self._accounts = [_Account(g) for g in self.visible.gpus]
        self._tree: set[int] = set()
        self._t0 = 0.0

    # -- Meter protocol ------------------------------------------------------------------------
    def start(self, tick: Tick) -> None:
        self._t0 = tick.t_s
        self._tree |= tick.tree_pids
        for acc in self._accounts:
            self._baseline(acc, tick)

    def sample(self, tick: Tick) -> None:
        self._tree |= tick.tree_pids  # pids seen at any tick: a child that exited still counts
        for acc in self._accounts:
            if acc.last_t is None:
                self._baseline(acc, tick)
            else:
                self._read(acc, tick)

    def stop(self, tick: Tick) -> dict[str, ComponentEnergy]:
        self.sample(tick)
        for acc in self._accounts:
            if acc.last_t is None:
                acc.lost.append(f"{acc.gpu.label}: no reading succeeded ({acc.errors[-1]})")
            elif acc.last_t < tick.t_s:
                acc.lost.append(
                    f"{acc.gpu.label}: {self._at(acc.last_t)} to the end ({self._at(tick.t_s)}) "
                    f"not counted ({acc.errors[-1]})"
                )
        energy_j = sum(a.tree_j for a in self._accounts)
        detail = "; ".join([self.visible.note, *(self._describe(a) for a in self._accounts)])
        incomplete = "; ".join(x for a in self._accounts for x in a.lost)
        return {"gpu": ComponentEnergy(energy_j, self._method(), detail, incomplete)}

    def gpu_uses(self) -> list[GpuUse]:
        """The GPUs the tree used in the last window (for the GPUs' embodied emissions)."""
        return [
            GpuUse(a.gpu.name, a.gpu.uuid, a.tree_gpu_s) for a in self._accounts if a.tree_gpu_s > 0
        ]

    # -- readings ------------------------------------------------------------------------------
    def _at(self, t_s: float) -> str:
        return f"{t_s - self._t0:.1f} s"

    def _energy_reading(self, acc: _Account) -> tuple[int, float]:
        """(counter mJ, power W); the one the GPU does not use is 0."""
        s = self.session
        if acc.counter is None:
            try:
                mj = s.energy_mj(acc.gpu)
            except s.error as exc:
                if not s.unsupported(exc):
                    raise
                acc.counter = False  # pre-Volta: integrate power samples
            else:
                acc.counter = True
                return mj, 0.0
        return (s.energy_mj(acc.gpu), 0.0) if acc.counter else (0, s.power_w(acc.gpu))

    def _baseline(self, acc: _Account, tick: Tick) -> None:
        try:
            mj, w = self._energy_reading(acc)
            _, since_us = self.session.sm_samples(acc.gpu, 0) if not acc.gpu.migs else (None, 0)
        except self.session.error as exc:
            acc.errors.append(f"NVML: {exc} at {self._at(tick.t_s)}")
            return
        if tick.t_s > self._t0:
            acc.lost.append(
                f"{acc.gpu.label}: 0.0 s to {self._at(tick.t_s)} not counted ({acc.errors[-1]})"
            )
        acc.last_t, acc.last_mj, acc.last_w, acc.since_us = tick.t_s, mj, w, since_us

    def _share(self, acc: _Account) -> tuple[float, str, int, set[int]]:
        """(tree share, how, newest sample timestamp, holder pids) for the interval just ended."""
        s, gpu = self.session, acc.gpu
        if gpu.migs:
            whole = max(gpu.memory_bytes, sum(m.memory_bytes for m in gpu.migs))
            instances = [
                (m.memory_bytes / whole if whole else 1 / len(gpu.migs), s.compute_pids(m.handle))
                for m in gpu.migs
            ]
            share, how = mig_share(self._tree, instances)
            return share, how, 0, set().union(*(h for _, h in instances))
        sm, newest = s.sm_samples(gpu, acc.since_us)
        holders = s.compute_pids(gpu.handle)
        share, how = interval_share(self._tree, sm, holders)
        return share, how, newest, holders | set(sm or ())

    def _read(self, acc: _Account, tick: Tick) -> None:
        assert acc.last_t is not None
        try:
            mj, w = self._energy_reading(acc)
            share, how, newest, pids = self._share(acc)
        except self.session.error as exc:
            acc.errors.append(f"NVML: {exc} at {self._at(tick.t_s)}")
            return
        dt = tick.t_s - acc.last_t
        # Counter: exact over the interval. Power: trapezoid between the two readings.
        e_j = (mj - acc.last_mj) / 1000.0 if acc.counter else 0.5 * (acc.last_w + w) * dt
        if e_j < 0:  # the counter restarted (driver reloaded): this interval cannot be read
            acc.lost.append(f"{acc.gpu.label}: energy counter went back at {self._at(tick.t_s)}")
            e_j = 0.0
        acc.energy_j += e_j
        acc.tree_j += share * e_j
        acc.tree_gpu_s += share * dt
        acc.how_s[how] = acc.how_s.get(how, 0.0) + dt
        new = pids - self._tree - acc.others
        acc.others |= new
        acc.foreign |= {p for p in new if not psutil.pid_exists(p)}
        acc.last_t, acc.last_mj, acc.last_w, acc.since_us = tick.t_s, mj, w, newest

    # -- the figure's words --------------------------------------------------------------------
    def _kinds(self, acc: _Account) -> list[str]:
        if acc.gpu.migs:
            return ["MIG instance and compute processes"]
        kinds = ["SM utilisation"] if {SM, IDLE} & set(acc.how_s) else []
        if PROCESSES in acc.how_s:
            kinds.append("compute processes")
        if not kinds:  # every interval unheld: name what the driver would have given
            kinds = ["SM utilisation" if self.session.gives_sm_samples(acc.gpu) else "compute processes"]
        return kinds

    def _method(self) -> str:
        kinds: list[str] = []
        for acc in self._accounts:
            kinds += [k for k in self._kinds(acc) if k not in kinds]
        return "measured: nvml, share by " + " and ".join(kinds)

    def _describe(self, acc: _Account) -> str:
        source = {True: "energy counter", False: "power samples", None: "unread"}[acc.counter]
        if acc.tree_j > 0 or acc.tree_gpu_s > 0:
            share = acc.tree_j / acc.energy_j if acc.energy_j > 0 else 0.0
            text = f"{acc.gpu.label}: {acc.tree_j:.1f} J of {acc.energy_j:.1f} J ({share:.3f})"
        else:
            who = f"{len(acc.others)} other process(es) did" if acc.others else "nor did any other"
            text = (
                f"{acc.gpu.label}: 0 J of {acc.energy_j:.1f} J, the tracked processes ran "
                f"nothing on it ({who})"
            )
            if acc.foreign:  # NVML reports host pids: in a container they match nothing here
                text += (
                    f" [{len(acc.foreign)} of them not visible from this PID namespace: if this "
                    "job runs in a container, NVML names it by host pid; run it with the host's "
                    "PID namespace (docker --pid=host) to have it matched]"
                )
        spans = ", ".join(f"{_HOW_WORDS[k]} {v:.1f} s" for k, v in sorted(acc.how_s.items()))
        text += f" by {source}" + (f"; intervals: {spans}" if spans else "")
        recovered = [e for e in acc.errors if acc.last_t is not None]
        if recovered and not acc.lost:
            text += f"; {len(recovered)} NVML error(s) recovered (first: {recovered[0]})"
        return text


def uses_of(meters: Sequence[object]) -> list[GpuUse]:
    """Every GPU use the window's meters recorded."""
    return [u for m in meters if isinstance(m, NvmlMeter) for u in m.gpu_uses()]
