"""Efficiency-aware hyperparameter search on Optuna: quality against measured cost, frugally.

    result = run_search(train_one, SearchConfig(space=..., objectives=(
        Objective("accuracy", "maximize"), Objective("co2_g_per_1k_inferences", "minimize"))),
        run_dir="runs/search-1")

`train_one(ctx)` trains one candidate with `ctx.params` ({"train.lr": 3e-3, ...}), calls
`ctx.report(step, quality)` after each epoch (a poor trial is stopped there) and returns its
metrics. Every call runs inside a ledger window; the window's footprint is stored with the trial
whatever happens to it (finished, stopped, failed), so "what did the search cost" always has an
answer. Optuna does the sampling (TPE / NSGA-II, multi-objective, constraints) and the storage
(SQLite file in the run folder, or a shared PostgreSQL server that several workers join); this
module adds the footprint, the multi-objective pruner and the worker loop that finishes a
distributed study with exactly `n_trials` finished trials even when a worker is killed.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from lowcarb.errors import ConfigError
from lowcarb.interrupts import interrupt_behind
from lowcarb.search.pruning import (
    INTERMEDIATE_ATTR,
    MultiObjectiveMedianPruner,
    PruningConfig,
    intermediate_values,
)
from lowcarb.search.result import (
    Constraint,
    Objective,
    SearchResult,
    TrialRecord,
    choose,
    footprint_metrics,
    footprint_summary,
    json_default,
    pareto_front,
    total_footprint,
)
from lowcarb.search.space import SearchSpace, suggest
from lowcarb.search.storage import default_storage_url, open_storage, redact

# User attributes stored with each trial (readable by every worker and by the report).
METRICS_ATTR = "lowcarb.metrics"
FOOTPRINT_ATTR = "lowcarb.footprint"
ERROR_ATTR = "lowcarb.error"
WORKER_ATTR = "lowcarb.worker"
SURPLUS_ATTR = "lowcarb.surplus"
CONFIG_ATTR = "lowcarb.search"

RESULT_FILE = "search.json"
_RESET_ATTRS: dict[str, Any] = {
    INTERMEDIATE_ATTR: {},
    FOOTPRINT_ATTR: None,
    METRICS_ATTR: {},
    ERROR_ATTR: None,
}

SamplerName = Literal["tpe", "nsga2", "random"]


@dataclass(frozen=True)
class SearchConfig:
    """One search.

    objectives: the first is the quality (accuracy, macro_f1, loss), the others costs. Several
        objectives give a Pareto front; one objective plus `constraints` gives a constrained search.
    pruning: stop trials whose intermediate quality is below the median at the same step; None
        runs every trial to the end.
    choose_within: the chosen trial is the cheapest (second objective) Pareto trial whose quality
        is within this much of the best quality on the front (0.005 = half an accuracy point).
    heartbeat_s / grace_s: a running trial whose worker has not beaten for grace_s is failed and
        retried (at most max_retry times) under a new trial number.
    max_failed_trials: a worker stops with an error after this many of its trials raised.
    """

    space: SearchSpace
    objectives: tuple[Objective, ...]
    n_trials: int = 20
    constraints: tuple[Constraint, ...] = ()
    pruning: PruningConfig | None = field(default_factory=PruningConfig)
    sampler: SamplerName = "tpe"
    seed: int | None = 0
    startup_trials: int = 8
    choose_within: float = 0.005
    heartbeat_s: int = 5
    grace_s: int = 20
    max_retry: int = 2
    max_failed_trials: int = 3

    def __post_init__(self) -> None:
        if not self.objectives:
            raise ConfigError("a search needs at least one objective (for example accuracy)")
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ConfigError(f"objectives name a metric twice: {metrics}")
        if self.n_trials < 1:
            raise ConfigError(f"n_trials must be >= 1, got {self.n_trials}")
        if self.sampler not in ("tpe", "nsga2", "random"):
            raise ConfigError(f"sampler must be tpe, nsga2 or random, got {self.sampler!r}")
        if self.startup_trials < 1:
            raise ConfigError(f"startup_trials must be >= 1, got {self.startup_trials}")
        if self.choose_within < 0:
            raise ConfigError(f"choose_within must be >= 0, got {self.choose_within}")
        if self.heartbeat_s < 1 or self.grace_s <= self.heartbeat_s:
            raise ConfigError(
                f"need heartbeat_s >= 1 and grace_s > heartbeat_s, got {self.heartbeat_s}, "
                f"{self.grace_s}"
            )
        if self.max_retry < 0 or self.max_failed_trials < 1:
            raise ConfigError("max_retry must be >= 0 and max_failed_trials >= 1")

    @property
    def quality(self) -> Objective:
        return self.objectives[0]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["space"] = {
            name: {"kind": type(p).__name__, **asdict(p)} for name, p in self.space.params
        }
        return out


class TrialStopped(optuna.TrialPruned):
    """Raised by `TrialContext.report` when the pruner stops a trial; let it propagate."""


class TrialContext:
    """What a trial function sees: its number, its parameters and `report(step, quality)`."""

    def __init__(
        self,
        trial: optuna.Trial,
        params: dict[str, Any],
        pruner: MultiObjectiveMedianPruner | None,
    ) -> None:
        self.number = trial.number
        self.params = params
        self._trial = trial
        self._pruner = pruner
        self._intermediate: dict[str, float] = {}

    def report(self, step: int, quality: float) -> None:
        """Record the quality after `step` (an epoch); raises TrialStopped if the trial is poor."""
        quality = float(quality)
        self._intermediate[str(int(step))] = quality
        self._trial.set_user_attr(INTERMEDIATE_ATTR, dict(self._intermediate))
        if self._pruner is not None and self._pruner.should_stop(
            self._trial.study, int(step), quality
        ):
            raise TrialStopped(f"quality {quality:.4g} at step {step} is below the median")


TrialFn = Callable[[TrialContext], Mapping[str, float]]


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def run_search(
    trial_fn: TrialFn,
    config: SearchConfig,
    *,
    run_dir: str | Path,
    storage: str | None = None,
    study_name: str = "search",
    initial_params: Sequence[Mapping[str, Any]] = (),
    carbon: Any = None,
    on_trial_footprint: Callable[[Any], None] | None = None,
) -> SearchResult:
    """Run (or join) a study until it has `config.n_trials` finished trials; return its summary.

    storage: None is `<run_dir>/search.db` (SQLite); a `postgresql://` URL lets workers on several
        processes or machines join the same `study_name`.
    initial_params: parameter sets enqueued first when this call creates the study (a fixed
        budget of the same candidates for a fair comparison).
    carbon: a `lowcarb.measure.CarbonConfig` for the trial windows (None: the resolved default).
    on_trial_footprint: called with each trial's Footprint when its window closes (the CLI stores
        them in the run store).
    The summary is also written to `<run_dir>/search.json`.
    """
    rdb = open_storage(
        storage,
        run_dir,
        heartbeat_s=config.heartbeat_s,
        grace_s=config.grace_s,
        max_retry=config.max_retry,
    )
    study = open_study(
        rdb, study_name, config, initial_params=initial_params, distributed=storage is not None
    )
    worker = _Worker(trial_fn, config, study, carbon=carbon, on_footprint=on_trial_footprint)
    worker.run()
    shown = redact(storage) if storage else default_storage_url(run_dir)
    result = summarize(study, config, storage=shown)
    result.save(Path(run_dir) / RESULT_FILE)
    return result


def open_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    config: SearchConfig,
    *,
    initial_params: Sequence[Mapping[str, Any]] = (),
    distributed: bool = False,
) -> optuna.Study:
    """Create the study, or join it if it exists with the same objectives."""
    sampler = make_sampler(config, distributed=distributed)
    directions = [o.direction for o in config.objectives]
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, directions=directions, sampler=sampler
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        # Resuming: a sampler seeded as at the start would draw the same candidates again.
        done = len(study.get_trials(deepcopy=False))
        if done:
            study.sampler = make_sampler(config, distributed=distributed, offset=done)
        stored = study.user_attrs.get(CONFIG_ATTR)
        ours = [asdict(o) for o in config.objectives]
        if stored is not None and stored.get("objectives") != ours:
            raise ConfigError(
                f"study {name!r} exists with objectives {stored.get('objectives')}, not {ours}; "
                f"give another --study name or the same objectives"
            ) from None
        if stored is None and [d.name.lower() for d in study.directions] != directions:
            raise ConfigError(
                f"study {name!r} exists with other directions; give another --study name"
            ) from None
        return study
    study.set_user_attr(
        CONFIG_ATTR, json.loads(json.dumps(config.to_dict(), default=json_default))
    )
    for params in initial_params:
        study.enqueue_trial(dict(params))
    return study


def make_sampler(
    config: SearchConfig, *, distributed: bool = False, offset: int = 0
) -> optuna.samplers.BaseSampler:
    """Optuna's samplers; they read constraints from `trial.set_constraint`.

    `offset` (the number of trials a resumed study already has) shifts the seed, so a resumed
    search draws new candidates and stays reproducible. Workers of a distributed study must not
    draw the same random candidates, so there the seed is mixed with the process id (a
    distributed study is not bit-reproducible; the embedded single-process default is).
    """
    seed = None if config.seed is None else config.seed + offset
    if seed is not None and distributed:
        seed = (seed * 1_000_003 + os.getpid()) % (2**31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if config.sampler == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=config.startup_trials,
                multivariate=True,
                constant_liar=True,
            )
        if config.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(
                seed=seed,
                population_size=max(4, config.startup_trials),
            )
        return optuna.samplers.RandomSampler(seed=seed)


class _Surplus(Exception):
    """This trial would exceed n_trials (another worker got there first)."""


class _Worker:
    """One process's share of a study: run trials until the study has n_trials finished ones."""

    def __init__(
        self,
        trial_fn: TrialFn,
        config: SearchConfig,
        study: optuna.Study,
        *,
        carbon: Any,
        on_footprint: Callable[[Any], None] | None,
    ) -> None:
        self.trial_fn = trial_fn
        self.config = config
        self.study = study
        self.carbon = carbon
        self.on_footprint = on_footprint
        self.pruner = (
            MultiObjectiveMedianPruner(config.pruning, config.quality.direction)
            if config.pruning is not None
            else None
        )
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.failures: list[str] = []
        self.abort: str | None = None

    def run(self) -> None:
        n = self.config.n_trials
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
            if finished >= n:
                return
            running = sum(t.state == TrialState.RUNNING for t in trials)
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            if finished + running >= n and waiting == 0:
                # Other workers are running the last trials; wait, in case one of them dies and
                # its trial comes back for retry.
                time.sleep(min(1.0, self.config.heartbeat_s))
                continue
            try:
                self.study.optimize(self._objective, n_trials=1, catch=(Exception,))
            except Exception as exc:
                # Optuna's trial clean-up can turn a Ctrl-C/SIGTERM into its own error; the
                # interrupt is what happened, so the caller marks the run interrupted.
                interrupt = interrupt_behind(exc)
                if interrupt is None:
                    raise
                raise interrupt from None
            if self.abort is not None:
                raise ConfigError(self.abort)
            if len(self.failures) >= self.config.max_failed_trials:
                raise ConfigError(
                    f"{len(self.failures)} trials failed; the last: {self.failures[-1]}"
                )

    def _objective(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        # A retried trial inherits the dead trial's attributes: start clean. (Each attribute
        # is one storage commit, so only those present are reset.)
        for key, empty in _RESET_ATTRS.items():
            if trial.user_attrs.get(key) not in (None, empty):
                trial.set_user_attr(key, empty)
        trial.set_user_attr(WORKER_ATTR, self.id)
        if self._is_surplus(trial):
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise _Surplus()
        params = suggest(trial, self.config.space)
        ctx = TrialContext(trial, params, self.pruner)
        from lowcarb.measure import track

        fp = None
        try:
            with track(
                f"search-trial-{trial.number}",
                unit="trial",
                units=1,
                config=self.carbon,
                on_close=self.on_footprint,
            ) as fp:
                raw = self.trial_fn(ctx)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            message = f"trial {trial.number}: {type(exc).__name__}: {exc}"
            trial.set_user_attr(ERROR_ATTR, message)
            self.failures.append(message)
            raise
        finally:
            # Stopped and failed trials keep their footprint: the search paid for them too.
            if fp is not None:
                trial.set_user_attr(FOOTPRINT_ATTR, footprint_summary(fp))
        metrics = {k: float(v) for k, v in dict(raw).items()}
        metrics.update(footprint_metrics(fp))
        trial.set_user_attr(METRICS_ATTR, metrics)
        missing = [o.metric for o in self.config.objectives if o.metric not in metrics]
        missing += [c.metric for c in self.config.constraints if c.metric not in metrics]
        if missing:
            self.abort = (
                f"the trials return no metric {', '.join(repr(m) for m in missing)}; "
                f"they return: {', '.join(sorted(metrics))}"
            )
            raise ConfigError(self.abort)
        for c in self.config.constraints:
            # Optuna's samplers read these: <= 0 is feasible.
            trial.set_constraint(c.metric, metrics[c.metric] - c.max_value)
        values = tuple(metrics[o.metric] for o in self.config.objectives)
        return values[0] if len(values) == 1 else values

    def _is_surplus(self, trial: optuna.Trial) -> bool:
        # Two workers that checked the count at the same moment may both start a trial; the
        # one with the higher number steps back, so the study ends with exactly n_trials.
        live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
        before = sum(
            t.number < trial.number and t.state in live
            for t in self.study.get_trials(deepcopy=False)
        )
        return before >= self.config.n_trials


# ---------------------------------------------------------------------------------------------
# summarising
# ---------------------------------------------------------------------------------------------

_STATE_NAMES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


def summarize(study: optuna.Study, config: SearchConfig, *, storage: str = "") -> SearchResult:
    """Trials, Pareto front, chosen trial and the total footprint of a study."""
    records: list[TrialRecord] = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(SURPLUS_ATTR):
            continue  # never ran: a worker stepped back (see _Worker._is_surplus)
        metrics = dict(t.user_attrs.get(METRICS_ATTR) or {})
        cons = list(t.constraints.values())
        records.append(
            TrialRecord(
                number=t.number,
                state=_STATE_NAMES[t.state],
                params=dict(t.params),
                metrics=metrics,
                footprint=t.user_attrs.get(FOOTPRINT_ATTR),
                intermediate=intermediate_values(t),
                feasible=t.state == TrialState.COMPLETE and all(c <= 0 for c in cons),
                error=t.user_attrs.get(ERROR_ATTR)
                or ("worker stopped beating (killed?)" if t.state == TrialState.FAIL else None),
                retry_of=t.system_attrs.get("failed_trial"),
                worker=t.user_attrs.get(WORKER_ATTR),
            )
        )
    pareto = pareto_front(records, config.objectives)
    return SearchResult(
        study_name=study.study_name,
        storage=storage,
        objectives=config.objectives,
        constraints=config.constraints,
        n_trials=config.n_trials,
        trials=tuple(records),
        pareto=tuple(pareto),
        chosen=choose(records, pareto, config.objectives, config.choose_within),
        total=total_footprint(records),
    )


